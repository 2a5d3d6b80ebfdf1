#!/usr/bin/env bash
# The default build against an older GStreamer than the host's: the plugin, built with the default
# features (the GStreamer 1.16 API) inside a Debian 11 root (GStreamer 1.18, glibc 2.31;
# scripts/lib/debian-root.sh: made once under target/, the checkout and the host's Rust toolchain
# bound in), is loaded by that GStreamer and runs the end-to-end pipeline against the host's
# cachenet-edge: hits on the cached submodel, a miss answered by the edge, a submodel swap.
# Runs as root. Nothing on the host changes except target/.
#
#   CACHENET_DEBIAN11_ROOT=/path scripts/test-old-gstreamer.sh [--root-only]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="${CACHENET_DEBIAN11_ROOT:-$PWD/target/debian11}"
TAG=test-old-gstreamer
ROOT_ID="bullseye gstreamer 1"
. scripts/lib/debian-root.sh

if ! root_ready; then
  make_root bullseye gcc libc6-dev pkgconf ca-certificates libgstreamer1.0-dev \
    libgstreamer-plugins-base1.0-dev gstreamer1.0-plugins-base gstreamer1.0-tools
  mark_root_ready
fi
[ "${1:-}" = --root-only ] && exit 0

# The edge server runs on the host (the root shares its network).
cargo build --workspace --bins --quiet
EDGE_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/cachenet-edge"
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
. scripts/lib/edge.sh
start_edge "$EDGE_BIN" tests/fixtures/tiny "$PORT"

cargo fetch --locked >/dev/null   # the root builds offline from the host's registry cache
in_root bash -euc '
  port=$1
  echo "'$TAG': GStreamer $(pkg-config --modversion gstreamer-1.0), $(ldd --version | head -n1)"
  cd /src
  export CARGO_TARGET_DIR=/src/target/debian11-build
  cargo build --locked --offline --profile quick -p gst-cachenet --lib
  mkdir -p /tmp/cachenet-plugin
  cp "$CARGO_TARGET_DIR/quick/libgstcachenet.so" /tmp/cachenet-plugin/
  export GST_PLUGIN_PATH=/tmp/cachenet-plugin GST_REGISTRY=/tmp/cachenet-registry.bin
  gst-inspect-1.0 cachenetclassify | grep -E "^  (Version|Name)|cachenetclassify:" || true
  # 5 black frames then 5 white ones: hits on submodel 0, a miss answered by the edge, submodel 1
  # fetched and compiled in the background, hits on it.
  gst-launch-1.0 -m videotestsrc num-buffers=5 pattern=black ! video/x-raw,format=RGB,width=64,height=48 \
      ! concat name=c ! cachenetclassify edge-url=http://127.0.0.1:$port model-dir=tests/fixtures/tiny \
      ! fakesink \
    videotestsrc num-buffers=5 pattern=white ! video/x-raw,format=RGB,width=64,height=48 \
      ! identity sleep-time=100000 ! c. > /tmp/out.txt 2>&1 || { cat /tmp/out.txt; exit 1; }
  results=$(grep -c "cachenet-result" /tmp/out.txt || true)
  edge=$(grep "cachenet-result" /tmp/out.txt | grep -c "source=(string)edge" || true)
  hits=$(grep "cachenet-result" /tmp/out.txt | grep -c "hit=(boolean)true" || true)
  last=$(grep "cachenet-result" /tmp/out.txt | tail -n1 | grep -o "label=(string)[a-z]*, .*submodel=(int)[0-9]*" || true)
  echo "'$TAG': $results results, $edge from the edge, $hits hits; last: $last"
  [ "$results" = 10 ] && [ "$edge" = 1 ] && [ "$hits" = 9 ] \
    || { grep cachenet /tmp/out.txt; echo "'$TAG': unexpected results" >&2; exit 1; }
' test-old-gstreamer "$PORT"
echo "$TAG: ok"
