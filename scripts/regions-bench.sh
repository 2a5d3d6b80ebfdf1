#!/usr/bin/env bash
# Per-object mode on real video, release build: facedetect (OpenCV's full-body cascade) finds the
# pedestrians of vtest.avi, cachenetclassify regions=roi classifies each against a local
# cachenet-edge serving a shipped set (MODEL_DIR, default models/fashion-mnist; the ImageNet
# vocabulary of models/real-footage names what the crops show). Three runs in one go: the detector alone, with
# cachenetclassify, and with cachenetclassify interval=5; prints wall clock, regions classified,
# objects, offloads. Needs `cargo build --release --workspace` and `scripts/setup.sh`.
#   [MODEL_DIR=models/real-footage] scripts/regions-bench.sh [FRAMES]   (default: all 795 frames)
set -euo pipefail
cd "$(dirname "$0")/.."
FRAMES="${1:--1}"
REL="${CARGO_TARGET_DIR:-$PWD/target}/release"
VIDEO=$(cd models && python3 -m cachenet_train fetch vtest)
CASCADE=/usr/share/opencv4/haarcascades/haarcascade_fullbody.xml
PORT="${PORT:-8471}"
MODEL_DIR="${MODEL_DIR:-models/fashion-mnist}"
. scripts/lib/edge.sh
start_edge "$REL/cachenet-edge" "$MODEL_DIR" "$PORT"
export GST_PLUGIN_PATH="$REL"
run() {  # name, then the tail of the pipeline after the detector
  local name=$1; shift
  local t0 t1 out
  t0=$(date +%s.%N)
  out=$(gst-launch-1.0 -m filesrc location="$VIDEO" ! decodebin ! identity eos-after="$FRAMES" ! videoconvert ! \
    facedetect display=false min-size-width=24 min-size-height=48 profile="$CASCADE" ! videoconvert ! "$@" 2>&1)
  t1=$(date +%s.%N)
  local frames regions objects offloads reused
  frames=$(grep -c "facedetect, timestamp" <<<"$out" || true)
  regions=$(grep -c "cachenet-result" <<<"$out" || true)
  objects=$({ grep -o "object-id=(guint64)[0-9]*" <<<"$out" || true; } | sort -u | wc -l)
  offloads=$(grep "cachenet-result" <<<"$out" | grep "source=(string)edge" | grep -c "reused=(boolean)false" || true)
  reused=$(grep "cachenet-result" <<<"$out" | grep -c "reused=(boolean)true" || true)
  printf '%-28s %7.2f s  %4d frames  %5d regions  %4d objects  %4d offloads  %4d reused\n' \
    "$name" "$(awk "BEGIN{print $t1 - $t0}")" "$frames" "$regions" "$objects" "$offloads" "$reused"
}
echo "run                          wall       frames     regions     objects   offloads   reused"
run "detector only" fakesink
run "cachenetclassify regions=roi" cachenetclassify regions=roi max-offloads=2 model-dir="$MODEL_DIR" \
  edge-url="http://127.0.0.1:$PORT" ! fakesink
run "... interval=5" cachenetclassify regions=roi max-offloads=2 interval=5 model-dir="$MODEL_DIR" \
  edge-url="http://127.0.0.1:$PORT" ! fakesink
