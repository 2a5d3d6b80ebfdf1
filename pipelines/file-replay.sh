#!/bin/sh
# Replay a recorded file (any container/codec decodebin handles; H.264/MPEG-4 need gstreamer1.0-libav).
# pipelines/file-replay.sh recording.mp4
exec gst-launch-1.0 -m filesrc location="$1" ! decodebin ! videoconvert ! \
  cachenetclassify edge-url="${EDGE:-http://127.0.0.1:8470}" model-dir="${MODEL_DIR:-models/fashion-mnist}" ! \
  fakesink sync=false
