#!/usr/bin/env bash
# The test suite: Rust workspace (unit, server, element, pipeline and end-to-end tests) and the
# training package's tests. Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The street video of the per-object tests (OpenCV's vtest.avi, from Debian's opencv-doc).
(cd models && python3 -m cachenet_train fetch vtest >/dev/null)
cargo build --workspace --all-targets
cargo test --workspace
CACHENET_EDGE_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/cachenet-edge" python3 -m pytest -q models/tests
