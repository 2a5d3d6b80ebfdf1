#!/usr/bin/env bash
# Demo: replay frames through cachenetclassify against a local cachenet-edge serving a shipped
# model set, then print hits, misses, swaps, accuracy (or agreement with the full model) and FPS.
#   [MODE=cachenet|device|edge] scripts/demo.sh [FRAMES]
#       Fashion-MNIST: its test set grouped by label (the paper's replay; default 2000 frames)
#   SET=real [SEGMENT="0.7 1"] [MODE=...] scripts/demo.sh [CLIP...]
#       the real-footage set (distilled from EfficientNet-Lite0) on held-out footage: by default
#       the last 30 % of vtest.avi (the same camera later); SEGMENT="0 1" with cup.mp4,
#       Megamind.avi or carphone_pristine.mp4 replays a scene the set never met. The reference
#       is the set's full model (the teacher): "accuracy" is agreement with it.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${PORT:-8470}"
MODE="${MODE:-cachenet}"
SET="${SET:-fashion-mnist}"
CACHENET_SKIP_TORCH=1 scripts/setup.sh >/dev/null   # the demo never trains
cargo build --workspace --quiet
if [ "$SET" = real ]; then
  MODEL_DIR="${MODEL_DIR:-models/real-footage}"
  SEGMENT="${SEGMENT:-0.7 1}"
  CLIPS=("${@:-vtest.avi}")
  DATA=".data/reference-$(echo "${CLIPS[*]} $SEGMENT" | tr ' ' '-')"
  if [ ! -f "$DATA/labels.csv" ]; then
    # shellcheck disable=SC2086
    (cd models && python3 -m cachenet_train reference --clip "${CLIPS[@]}" --segment $SEGMENT \
      --model-dir "../$MODEL_DIR" --out "../$DATA") >/dev/null
  fi
  REFERENCE="the full model"
else
  FRAMES="${1:-2000}"
  MODEL_DIR="${MODEL_DIR:-models/fashion-mnist}"
  DATA=".data/replay-grouped-$FRAMES"
  if [ ! -f "$DATA/labels.csv" ]; then
    (cd models && python3 -m cachenet_train replay --order grouped --seed 0 --limit "$FRAMES" --out "../$DATA") >/dev/null
  fi
  REFERENCE="labels"
fi
N=$(($(wc -l < "$DATA/labels.csv") - 1))
. scripts/lib/edge.sh
start_edge target/debug/cachenet-edge "$MODEL_DIR" "$PORT" .data/edge.log
export GST_PLUGIN_PATH="$PWD/target/debug"
START=$(date +%s.%N)
gst-launch-1.0 -m multifilesrc location="$DATA/frame-%05d.png" index=0 stop-index=$((N - 1)) \
    caps="image/png,framerate=30/1" ! pngdec ! videoconvert ! \
    cachenetclassify mode="$MODE" edge-url="http://127.0.0.1:$PORT" model-dir="$MODEL_DIR" ! \
    fakesink sync=false > .data/demo.log
END=$(date +%s.%N)
python3 scripts/summarize.py .data/demo.log "$DATA/labels.csv" "$(python3 -c "print($END - $START)")" "$REFERENCE"
