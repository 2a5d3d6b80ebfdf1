#!/bin/sh
# Raspberry Pi OS (Bookworm, GStreamer 1.22): the camera module through libcamerasrc
# (gstreamer1.0-libcamera), scaled on the CPU to a small frame the element area-averages further.
# A USB camera: replace the source with `v4l2src device=/dev/video0`.
exec gst-launch-1.0 -m libcamerasrc ! 'video/x-raw,width=640,height=480,framerate=30/1' ! \
  videoconvert ! 'video/x-raw,format=RGB' ! \
  cachenetclassify edge-url="${EDGE:-http://edge:8470}" model-dir="${MODEL_DIR:-$HOME/cachenet/models/fashion-mnist}" \
    offload=async cache-dir="${CACHE_DIR:-$HOME/.cache/cachenet/submodels}" ! \
  fakesink sync=false
