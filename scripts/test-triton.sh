#!/usr/bin/env bash
# The inference-server test against NVIDIA Triton (through PyTriton, dynamic batching) instead of
# KServe: the element's replay through `cachenet-edge --full-model oip+http://...` decides as
# in-process. PyTriton's Python backend loads the system's libpython, so its environment is made
# from /usr/bin/python3 (.data/venv-triton; needs glibc >= 2.35).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.data/venv-triton
PY=/usr/bin/python3
[ -x "$PY" ] || { echo "test-triton: $PY is missing (Debian: apt-get install python3 python3-venv)" >&2; exit 1; }
if ! "$VENV/bin/python" -c 'import pytriton, onnxruntime' >/dev/null 2>&1; then
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q nvidia-pytriton==0.7.0 onnxruntime==1.31.1
fi
[ -f .data/replay-grouped-1000/labels.csv ] || (cd models && python3 -m cachenet_train replay \
  --order grouped --seed 0 --limit 1000 --out ../.data/replay-grouped-1000 >/dev/null)
cargo build --workspace
CACHENET_OIP_SERVER=triton CACHENET_TRITON_PYTHON="$PWD/$VENV/bin/python" \
  cargo test -p gst-cachenet --test oip -- --nocapture
