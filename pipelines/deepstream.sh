#!/bin/sh
# DeepStream-style: batch with nvstreammux, convert to RGBA system memory for cachenetclassify.
exec gst-launch-1.0 -m uridecodebin uri="${URI:-file:///opt/nvidia/deepstream/samples/streams/sample_720p.mp4}" ! \
  m.sink_0 nvstreammux name=m batch-size=1 width=1280 height=720 ! \
  nvvideoconvert ! 'video/x-raw,format=RGBA' ! \
  cachenetclassify edge-url="${EDGE:-http://edge:8470}" model-dir="${MODEL_DIR:-/opt/cachenet/models/fashion-mnist}" offload=async ! \
  fakesink sync=false
