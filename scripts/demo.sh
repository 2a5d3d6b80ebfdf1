#!/usr/bin/env bash
# Demo: replay the Fashion-MNIST test set grouped by label (the paper's replay) through
# cachenetclassify against a local cachenet-edge serving the shipped model set, then print
# hits, misses, swaps, accuracy and FPS.
#   [MODE=cachenet|device|edge] scripts/demo.sh [FRAMES]   (default 2000 frames: 200 per class)
set -euo pipefail
cd "$(dirname "$0")/.."
FRAMES="${1:-2000}"
MODEL_DIR="${MODEL_DIR:-models/fashion-mnist}"
PORT="${PORT:-8470}"
MODE="${MODE:-cachenet}"
DATA=".data/replay-grouped-$FRAMES"
CACHENET_SKIP_TORCH=1 scripts/setup.sh >/dev/null   # the demo never trains
cargo build --workspace --quiet
if [ ! -f "$DATA/labels.csv" ]; then
  (cd models && python3 -m cachenet_train replay --order grouped --seed 0 --limit "$FRAMES" --out "../$DATA") >/dev/null
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
python3 scripts/summarize.py .data/demo.log "$DATA/labels.csv" "$(python3 -c "print($END - $START)")"
