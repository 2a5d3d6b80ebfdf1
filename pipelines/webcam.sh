#!/bin/sh
# Live camera (V4L2) classified by CacheNet; results on the bus (-m) and as ROI meta.
# EDGE=http://edge:8470 MODEL_DIR=models/fashion-mnist pipelines/webcam.sh
# (EDGE=http://edge1:8470,http://edge2:8470: several edges, this camera prefers one and fails over)
exec gst-launch-1.0 -m v4l2src device="${DEVICE:-/dev/video0}" ! videoconvert ! \
  cachenetclassify edge-url="${EDGE:-http://127.0.0.1:8470}" model-dir="${MODEL_DIR:-models/fashion-mnist}" \
    offload=async cache-dir="${CACHE_DIR:-$HOME/.cache/cachenet/submodels}" ! \
  videoconvert ! autovideosink
