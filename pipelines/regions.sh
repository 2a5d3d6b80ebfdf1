#!/bin/sh
# Per-object classification: a detector attaches regions of interest, cachenetclassify classifies
# each region as its own tracked object (its own cached submodel, at most max-offloads misses per
# frame to the edge). Here GStreamer's facedetect (gstreamer1.0-opencv) with OpenCV's full-body
# cascade finds the pedestrians of a video; any element that attaches GstVideoRegionOfInterestMeta
# works the same way (roi-types picks the detector's labels).
#   pipelines/regions.sh ~/.cache/cachenet/data/vtest.avi   (python3 -m cachenet_train fetch vtest)
exec gst-launch-1.0 -m filesrc location="${1:?a video file}" ! decodebin ! videoconvert ! \
  facedetect display=false min-size-width=24 min-size-height=48 \
    profile=/usr/share/opencv4/haarcascades/haarcascade_fullbody.xml ! videoconvert ! \
  cachenetclassify regions=roi roi-types=face max-offloads=2 cache-size=2 \
    edge-url="${EDGE:-http://127.0.0.1:8470}" model-dir="${MODEL_DIR:-models/fashion-mnist}" ! \
  fakesink sync=false
