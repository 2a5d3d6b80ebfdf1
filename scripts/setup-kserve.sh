#!/usr/bin/env bash
# KServe's model server in its own virtual environment (.data/venv-kserve), for the inference
# server tests and deploy/kserve/serve_onnx.py. Installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${CACHENET_KSERVE_VENV:-.data/venv-kserve}"
if ! "$VENV/bin/python" -c 'import kserve, onnxruntime' >/dev/null 2>&1; then
  python3 -m venv "$VENV" >&2 || { echo "setup-kserve: python3 -m venv failed (Debian: apt-get install python3-venv)" >&2; exit 1; }
  "$VENV/bin/pip" install -q --upgrade pip >&2
  "$VENV/bin/pip" install -q -r deploy/kserve/requirements.txt >&2
fi
echo "$(cd "$VENV" && pwd)/bin/python"
