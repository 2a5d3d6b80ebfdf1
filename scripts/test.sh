#!/usr/bin/env bash
# The test suite: Rust workspace (unit, server, element, pipeline and end-to-end tests) and the
# training package's tests. Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The street video of the per-object tests (OpenCV's vtest.avi, from Debian's opencv-doc).
(cd models && python3 -m cachenet_train fetch vtest >/dev/null)
# Frames of the backends' same-decisions test: the Fashion-MNIST grouped replay and vtest.avi's
# held-out end with the real set's answers.
(cd models && { [ -f ../.data/replay-grouped-1000/labels.csv ] || python3 -m cachenet_train replay \
    --order grouped --seed 0 --limit 1000 --out ../.data/replay-grouped-1000 >/dev/null; } \
  && { [ -f ../.data/reference-vtest-check/labels.csv ] || python3 -m cachenet_train reference \
    --model-dir real-footage --segment 0.7 0.75 --clip vtest.avi --out ../.data/reference-vtest-check >/dev/null; })
# KServe's model server in its own virtual environment (the inference-server tests).
CACHENET_KSERVE_PYTHON="$(scripts/setup-kserve.sh)"
export CACHENET_KSERVE_PYTHON
cargo build --workspace --all-targets
scripts/check-deploy.sh
cargo test --workspace
# The onnxruntime backend (cargo feature onnxruntime) with the library of the onnxruntime wheel.
ORT_DYLIB_PATH="$(python3 -c 'import glob, os, onnxruntime; print(sorted(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), "capi", "libonnxruntime.so*")))[0])')"
export ORT_DYLIB_PATH
cargo test -p cachenet-core -p gst-cachenet --features cachenet-core/onnxruntime,gst-cachenet/onnxruntime \
  --test same_decisions --test backends
CACHENET_EDGE_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/cachenet-edge" python3 -m pytest -q models/tests
