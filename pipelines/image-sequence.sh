#!/bin/sh
# Replay a frame folder (frame-00000.png, ...), e.g. one written by
#   (cd models && python3 -m cachenet_train replay --order grouped --out ../.data/replay)
DIR="${1:-.data/replay}"
exec gst-launch-1.0 -m multifilesrc location="$DIR/frame-%05d.png" index=0 caps="image/png,framerate=30/1" ! \
  pngdec ! videoconvert ! \
  cachenetclassify edge-url="${EDGE:-http://127.0.0.1:8470}" model-dir="${MODEL_DIR:-models/fashion-mnist}" ! \
  fakesink sync=false
