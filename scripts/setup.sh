#!/usr/bin/env bash
# Install what CacheNet needs on Debian 12 / Ubuntu 22.04+ (run as root or with sudo):
# GStreamer development files and plugins (facedetect from gstreamer1.0-opencv is the detector of
# the per-object examples and tests, and of distill --detector through the system's Python with
# python3-gi and python3-gst-1.0), haproxy (the balancer of the several-edges tests), Python
# runtime and training packages.
set -euo pipefail
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
PKGS="pkg-config libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev gstreamer1.0-tools
      gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-libav gstreamer1.0-opencv opencv-data
      python3-gi python3-gst-1.0 python3-pip python3-venv curl haproxy"
missing=""
for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi
# Runtime needs (tests, export checks) and the training stack (PyTorch) are separate lists.
python3 -m pip install -q -r models/requirements-runtime.txt
if [ "${CACHENET_SKIP_TORCH:-0}" != "1" ]; then
  python3 -m pip install -q -r models/requirements-train.txt
fi
echo "setup: ok"
