#!/bin/sh
# Jetson CSI camera (JetPack 5, GStreamer 1.16): NVMM -> system memory BGRx for the element.
exec gst-launch-1.0 -m nvarguscamerasrc ! 'video/x-raw(memory:NVMM),width=1280,height=720,framerate=30/1' ! \
  nvvidconv ! 'video/x-raw,format=BGRx' ! \
  cachenetclassify edge-url="${EDGE:-http://edge:8470}" model-dir="${MODEL_DIR:-/opt/cachenet/models/fashion-mnist}" \
    offload=async cache-dir=/var/cache/cachenet ! \
  nvvidconv ! 'video/x-raw(memory:NVMM)' ! nv3dsink
