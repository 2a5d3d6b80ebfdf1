#!/usr/bin/env bash
# arm64 (Jetson, Raspberry Pi) from an x86 machine: in a Debian 13 root with multiarch
# (scripts/lib/debian-root.sh: made once under target/), Debian's Rust (rustc-web/cargo-web 1.96
# and its arm64 standard library) cross-builds the plugin and cachenet-edge for
# aarch64-unknown-linux-gnu against Debian's arm64 GStreamer; then, under qemu-user, the arm64
# cachenet-edge loads the shipped model set and answers /health/ready, and the arm64
# gst-launch-1.0 with the arm64 plugin classifies the first frames of the grouped Fashion-MNIST
# replay with the shipped set against the host's cachenet-edge (the emulated edge takes longer
# than a request may for the full model): frames go through, hits and misses happen, results
# arrive on the bus. Emulated speed is not a benchmark. Runs as root; nothing on the host changes
# except target/ and .data/.
#
# Both modes also cross-build the engine tests (`cachenet-core/tests/engine.rs`) and run them
# under qemu, all but the one on the shipped set (the own plan on matrixmultiply's NEON kernels
# against tract's plan).
#
# `--smoke` (what CI runs) cross-builds with the quick profile (no optimisation: minutes less of
# compiling) and runs the tiny fixture set instead: the arm64 edge loads it and answers
# /health/ready; the arm64 gst-launch-1.0 classifies 5 dark then 5 bright frames against the
# host's edge: hits, a miss answered by the edge, a submodel swap.
#
#   scripts/test-arm64.sh [FRAMES]   (default 60)
#   scripts/test-arm64.sh --smoke
#   CACHENET_ARM64_ROOT=/path scripts/test-arm64.sh --root-only
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=full
case "${1:-}" in
  --smoke) MODE=smoke; FRAMES=10 ;;
  --root-only) MODE=root ;;
  *) FRAMES="${1:-60}" ;;
esac
ROOT="${CACHENET_ARM64_ROOT:-$PWD/target/debian13-arm64}"
TAG=test-arm64
ROOT_ID="trixie arm64 1"
. scripts/lib/debian-root.sh

if ! root_ready; then
  make_root trixie ca-certificates
  in_root bash -euc 'dpkg --add-architecture arm64 && apt-get update -qq \
    && apt-get install -y -qq --no-install-recommends rustc-web cargo-web libstd-rust-web-dev:arm64 \
         gcc gcc-aarch64-linux-gnu libc6-dev libc6-dev:arm64 pkgconf qemu-user \
         libgstreamer1.0-dev:arm64 libgstreamer-plugins-base1.0-dev:arm64 gstreamer1.0-tools:arm64 \
         gstreamer1.0-plugins-base:arm64 gstreamer1.0-plugins-good:arm64 >/dev/null \
    && apt-get clean'
  mark_root_ready
fi
[ $MODE = root ] && exit 0

if [ $MODE = full ]; then
  # The frames (on the host: Python and the dataset are there).
  SET=models/fashion-mnist PROFILE=dev OUT=debug
  DATA=".data/replay-grouped-$FRAMES"
  if [ ! -f "$DATA/labels.csv" ]; then
    (cd models && python3 -m cachenet_train replay --order grouped --seed 0 --limit "$FRAMES" --out "../$DATA") >/dev/null
  fi
  N=$(($(wc -l < "$DATA/labels.csv") - 1))
else
  SET=tests/fixtures/tiny PROFILE=quick OUT=quick DATA=- N=$FRAMES
fi

# The edge the element offloads to runs on the host (the root shares its network).
cargo build --workspace --bins --quiet
. scripts/lib/edge.sh
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
start_edge "${CARGO_TARGET_DIR:-$PWD/target}/debug/cachenet-edge" "$SET" "$PORT"

cargo fetch --locked >/dev/null   # the root builds offline from the host's registry cache
in_root bash -euc '
  frames=$1 data=$2 tag=$3 host_edge=$4 set=$5 profile=$6 outdir=$7
  cd /src
  echo "$tag: $(/usr/bin/rustc --version), GStreamer $(PKG_CONFIG_LIBDIR=/usr/lib/aarch64-linux-gnu/pkgconfig pkg-config --modversion gstreamer-1.0) (arm64)"
  export RUSTC=/usr/bin/rustc CARGO_TARGET_DIR=/src/target/arm64-build
  export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
  export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
  export PKG_CONFIG_ALLOW_CROSS=1 PKG_CONFIG_LIBDIR=/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig
  /usr/bin/cargo build --locked --offline --profile $profile --target aarch64-unknown-linux-gnu \
    -p gst-cachenet -p cachenet-edge
  out=$CARGO_TARGET_DIR/aarch64-unknown-linux-gnu/$outdir
  file_info() { od -An -tx1 -j18 -N2 "$1" | tr -d " "; }   # ELF e_machine: b700 = aarch64
  [ "$(file_info "$out/libgstcachenet.so")" = b700 ] && [ "$(file_info "$out/cachenet-edge")" = b700 ] \
    || { echo "$tag: not aarch64 binaries" >&2; exit 1; }
  export QEMU_LD_PREFIX=/
  port=$(( 20000 + RANDOM % 20000 ))
  qemu-aarch64 "$out/cachenet-edge" --model-dir $set --listen 127.0.0.1:$port 2>/tmp/edge.log &
  edge=$!
  trap "kill $edge 2>/dev/null || true" EXIT
  ready=no
  for _ in $(seq 300); do
    if { exec 3<>/dev/tcp/127.0.0.1/$port; } 2>/dev/null; then
      printf "GET /health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" >&3
      if head -n1 <&3 | grep -q " 200 "; then ready=yes; exec 3<&-; break; fi
      exec 3<&-
    fi
    sleep 1
  done
  [ $ready = yes ] || { cat /tmp/edge.log; echo "$tag: the arm64 edge never answered /health/ready" >&2; exit 1; }
  echo "$tag: the arm64 cachenet-edge loaded $set and answers /health/ready (200)"
  kill $edge
  # The engine tests (tiny fixture set, hand-built graphs) on arm64: the own plan on the NEON
  # kernels of matrixmultiply against the plan of tract, as a board runs them.
  /usr/bin/cargo test --locked --offline --profile $profile --target aarch64-unknown-linux-gnu \
    -p cachenet-core --test engine --no-run 2>/tmp/engine-build.log \
    || { tail -20 /tmp/engine-build.log; exit 1; }
  engine_test=$(ls -t "$out"/deps/engine-* | grep -v "\.d$" | head -1)
  [ "$(file_info "$engine_test")" = b700 ] || { echo "$tag: the engine tests are not aarch64" >&2; exit 1; }
  QEMU_LD_PREFIX=/ qemu-aarch64 "$engine_test" --skip shipped_models >/tmp/engine.log 2>&1 \
    || { tail -30 /tmp/engine.log; exit 1; }
  echo "$tag: engine tests under qemu: $(grep "^test result" /tmp/engine.log)"
  mkdir -p /tmp/arm64-plugin && cp "$out/libgstcachenet.so" /tmp/arm64-plugin/
  export GST_PLUGIN_PATH=/tmp/arm64-plugin GST_REGISTRY=/tmp/arm64-registry.bin GST_REGISTRY_FORK=no
  qemu-aarch64 /usr/bin/gst-inspect-1.0 cachenetclassify | grep -E "^  (Version|Name) " || true
  start=$(date +%s)
  if [ "$data" = - ]; then
    # 5 dark frames, then 5 bright ones (submodel 1 is fetched for them).
    qemu-aarch64 /usr/bin/gst-launch-1.0 -m videotestsrc num-buffers=5 pattern=black \
        ! video/x-raw,format=RGB,width=64,height=48 ! concat name=c \
        ! cachenetclassify edge-url=http://127.0.0.1:$host_edge model-dir=$set timeout-ms=10000 ! fakesink \
      videotestsrc num-buffers=5 pattern=white ! video/x-raw,format=RGB,width=64,height=48 \
        ! identity sleep-time=200000 ! c. > /tmp/out.txt 2>&1 || { tail -30 /tmp/out.txt; exit 1; }
  else
    qemu-aarch64 /usr/bin/gst-launch-1.0 -m multifilesrc location="$data/frame-%05d.png" index=0 \
        stop-index=$((frames - 1)) caps="image/png,framerate=30/1" ! pngdec ! videoconvert \
        ! cachenetclassify edge-url=http://127.0.0.1:$host_edge model-dir=$set timeout-ms=10000 \
        ! fakesink > /tmp/out.txt 2>&1 || { tail -30 /tmp/out.txt; exit 1; }
  fi
  results=$(grep -c "cachenet-result" /tmp/out.txt || true)
  hits=$(grep "cachenet-result" /tmp/out.txt | grep -c "hit=(boolean)true" || true)
  edge_answers=$(grep "cachenet-result" /tmp/out.txt | grep -c "source=(string)edge" || true)
  swaps=$(grep -c "cachenet-swap" /tmp/out.txt || true)
  echo "$tag: $results results for $frames frames in $(( $(date +%s) - start )) s under qemu: $hits hits, $edge_answers answered by the edge, $swaps submodel swaps"
  grep "cachenet-result" /tmp/out.txt | sed -n "1p;\$p" | grep -o "label=[^,]*, class-id=[^,]*\|source=[^,]*, hit=[^,]*, submodel=[^,]*" | paste -sd " " -
  [ "$results" = "$frames" ] && [ "$hits" -gt 0 ] && [ "$edge_answers" -gt 0 ] \
    || { echo "$tag: expected every frame classified, hits and edge answers" >&2; exit 1; }
' test-arm64 "$N" "$DATA" "$TAG" "$PORT" "$SET" "$PROFILE" "$OUT"
echo "$TAG: ok"
