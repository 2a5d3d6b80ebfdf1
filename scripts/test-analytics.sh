#!/usr/bin/env bash
# Build and test gst-cachenet with the cargo features `analytics` and `tensor-meta` against
# GStreamer 1.26, on hosts whose own GStreamer is older than 1.24 (Debian 12 ships 1.22): in a
# Debian 13 root (scripts/lib/debian-root.sh: made once under target/, the checkout and the host's
# Rust toolchain bound in). Runs as root. Nothing on the host changes except target/.
#
#   scripts/test-analytics.sh              # element + analytics tests with --features analytics
#   CACHENET_DEBIAN13_ROOT=/path scripts/test-analytics.sh [--root-only]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="${CACHENET_DEBIAN13_ROOT:-$PWD/target/debian13}"
TAG=test-analytics
ROOT_ID="trixie analytics 1"
. scripts/lib/debian-root.sh

if ! root_ready; then
  make_root trixie gcc libc6-dev pkgconf ca-certificates libgstreamer1.0-dev \
    libgstreamer-plugins-base1.0-dev gstreamer1.0-plugins-base gstreamer1.0-tools \
    libgstreamer-plugins-bad1.0-0
  # The analytics library's headers and pkg-config file, without the -dev package's dependencies
  # on every other gst-plugins-bad library (OpenCV among them).
  in_root bash -euc 'cd /tmp && apt-get download -qq libgstreamer-plugins-bad1.0-dev \
    && dpkg -x libgstreamer-plugins-bad1.0-dev_*.deb dev \
    && cp -r dev/usr/include/gstreamer-1.0/gst/analytics /usr/include/gstreamer-1.0/gst/ \
    && cp dev/usr/lib/x86_64-linux-gnu/pkgconfig/gstreamer-analytics-1.0.pc \
          /usr/lib/x86_64-linux-gnu/pkgconfig/ \
    && cp -P dev/usr/lib/x86_64-linux-gnu/libgstanalytics-1.0.so /usr/lib/x86_64-linux-gnu/ \
    && rm -rf dev libgstreamer-plugins-bad1.0-dev_*.deb'
  mark_root_ready
fi
[ "${1:-}" = --root-only ] && exit 0

# Crates come from the host's registry cache; the root builds offline into its own folder.
cargo fetch --locked >/dev/null
in_root bash -euc '
  echo "test-analytics: GStreamer $(pkg-config --modversion gstreamer-1.0), analytics $(pkg-config --modversion gstreamer-analytics-1.0)"
  cd /src
  export CARGO_TARGET_DIR=/src/target/debian13-build
  # The element tests start the cachenet-edge binary of the same build for their fault cases.
  cargo build --locked --offline --profile quick -p cachenet-edge --bin cachenet-edge
  cargo test --locked --offline --profile quick -p gst-cachenet --features tensor-meta --lib --test element
  cargo clippy --locked --offline --profile quick -p gst-cachenet --features tensor-meta --all-targets -- -D warnings
  # The plugin itself (cargo test built the cdylib too), loaded by GStreamer 1.26 in a pipeline.
  mkdir -p /tmp/cachenet-plugin
  cp "$CARGO_TARGET_DIR/quick/deps/libgstcachenet.so" /tmp/cachenet-plugin/
  export GST_PLUGIN_PATH=/tmp/cachenet-plugin GST_REGISTRY=/tmp/cachenet-registry.bin
  gst-inspect-1.0 cachenetclassify >/dev/null
  gst-launch-1.0 -q videotestsrc num-buffers=10 ! video/x-raw,format=RGB,width=64,height=48 \
    ! cachenetclassify model-dir=tests/fixtures/tiny mode=device ! fakesink
'
echo "test-analytics: ok"
