#!/usr/bin/env bash
# Build and test gst-cachenet with the cargo feature `analytics` against GStreamer 1.26, on hosts
# whose own GStreamer is older than 1.24 (Debian 12 ships 1.22): a Debian 13 root made with
# debootstrap under target/ (once; reused afterwards), entered in a private mount namespace with
# this checkout and the host's Rust toolchain bound in. Runs as root. Nothing on the host changes
# except target/.
#
#   scripts/test-analytics.sh              # element + analytics tests with --features analytics
#   CACHENET_DEBIAN13_ROOT=/path scripts/test-analytics.sh
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
ROOT="${CACHENET_DEBIAN13_ROOT:-$REPO/target/debian13}"
host_mirror() { # the Debian archive the host's own apt uses (deb822 .sources or one-line .list)
  {
    grep -hE '^[[:space:]]*URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null |
      awk '{for (i = 2; i <= NF; i++) print $i}'
    grep -hE '^[[:space:]]*deb[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
      awk '{for (i = 2; i <= NF; i++) if ($i ~ /^[a-z+]+:\/\//) { print $i; break }}'
  } | grep -v -- '-security' | head -n1 || true   # no such file: not an error
}
MIRROR="${DEBIAN_MIRROR:-$(host_mirror)}"
[ -n "$MIRROR" ] || { echo "test-analytics: no Debian mirror in the host's apt sources; set DEBIAN_MIRROR" >&2; exit 1; }
RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}"
CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}"
[ "$(id -u)" -eq 0 ] || { echo "test-analytics: needs root (debootstrap, chroot)" >&2; exit 1; }

in_root() { # run a command inside the Debian 13 root, with /proc, /dev, the checkout and Rust
  unshare --mount --propagation private bash -euc '
    root="$1" repo="$2" rustup="$3" cargo="$4"; shift 4
    mount -t proc proc "$root/proc"
    mount --rbind /dev "$root/dev"
    mkdir -p "$root/src" "$root/opt/rustup" "$root/opt/cargo"
    mount --bind "$repo" "$root/src"
    mount --bind "$rustup" "$root/opt/rustup"
    mount --bind "$cargo" "$root/opt/cargo"
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    exec chroot "$root" env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
      PATH=/opt/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      RUSTUP_HOME=/opt/rustup CARGO_HOME=/opt/cargo DEBIAN_FRONTEND=noninteractive "$@"
  ' in_root "$ROOT" "$REPO" "$RUSTUP_HOME" "$CARGO_HOME" "$@"
}

if [ ! -f "$ROOT/.cachenet-ready" ]; then
  command -v debootstrap >/dev/null || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  }
  rm -rf "$ROOT"
  echo "test-analytics: making a Debian 13 root in $ROOT (a few minutes, once)"
  debootstrap --variant=minbase trixie "$ROOT" "$MIRROR" >"$ROOT.debootstrap.log" 2>&1 \
    || { tail -20 "$ROOT.debootstrap.log" >&2; exit 1; }
  in_root apt-get install -y -qq --no-install-recommends \
    gcc libc6-dev pkgconf ca-certificates libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev \
    gstreamer1.0-plugins-base gstreamer1.0-tools libgstreamer-plugins-bad1.0-0 >/dev/null
  # The analytics library's headers and pkg-config file, without the -dev package's dependencies
  # on every other gst-plugins-bad library (OpenCV among them).
  in_root bash -euc 'cd /tmp && apt-get download -qq libgstreamer-plugins-bad1.0-dev \
    && dpkg -x libgstreamer-plugins-bad1.0-dev_*.deb dev \
    && cp -r dev/usr/include/gstreamer-1.0/gst/analytics /usr/include/gstreamer-1.0/gst/ \
    && cp dev/usr/lib/x86_64-linux-gnu/pkgconfig/gstreamer-analytics-1.0.pc \
          /usr/lib/x86_64-linux-gnu/pkgconfig/ \
    && cp -P dev/usr/lib/x86_64-linux-gnu/libgstanalytics-1.0.so /usr/lib/x86_64-linux-gnu/ \
    && rm -rf dev libgstreamer-plugins-bad1.0-dev_*.deb'
  touch "$ROOT/.cachenet-ready"
fi

# Crates come from the host's registry cache; the root builds offline into its own folder.
cargo fetch --locked >/dev/null
in_root bash -euc '
  echo "test-analytics: GStreamer $(pkg-config --modversion gstreamer-1.0), analytics $(pkg-config --modversion gstreamer-analytics-1.0)"
  cd /src
  export CARGO_TARGET_DIR=/src/target/debian13-build
  cargo test --locked --offline -p gst-cachenet --features analytics --lib --test element
  cargo clippy --locked --offline -p gst-cachenet --features analytics --all-targets -- -D warnings
  # The plugin itself (cargo test built the cdylib too), loaded by GStreamer 1.26 in a pipeline.
  mkdir -p /tmp/cachenet-plugin
  cp "$CARGO_TARGET_DIR/debug/deps/libgstcachenet.so" /tmp/cachenet-plugin/
  export GST_PLUGIN_PATH=/tmp/cachenet-plugin GST_REGISTRY=/tmp/cachenet-registry.bin
  gst-inspect-1.0 cachenetclassify >/dev/null
  gst-launch-1.0 -q videotestsrc num-buffers=10 ! video/x-raw,format=RGB,width=64,height=48 \
    ! cachenetclassify model-dir=tests/fixtures/tiny mode=device ! fakesink
'
echo "test-analytics: ok"
