#!/usr/bin/env bash
# Check the deployment files in deploy/: the systemd unit (systemd-analyze verify, with the
# built binary in place of /usr/local/bin/cachenet-edge) and the haproxy configuration
# (haproxy -c). Each check runs where its tool is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/cachenet-edge"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
if command -v systemd-analyze >/dev/null 2>&1; then
  sed "s#/usr/local/bin/cachenet-edge#$BIN#" deploy/systemd/cachenet-edge.service > "$tmp/cachenet-edge.service"
  systemd-analyze verify "$tmp/cachenet-edge.service"
  echo "check-deploy: systemd unit ok"
fi
if command -v haproxy >/dev/null 2>&1; then
  CACHENET_LISTEN=127.0.0.1:8470 CACHENET_EDGE1=127.0.0.1:8471 CACHENET_EDGE2=127.0.0.1:8472 \
    CACHENET_EDGE3=127.0.0.1:8473 haproxy -c -q -f deploy/haproxy/cachenet-edges.cfg
  echo "check-deploy: haproxy configuration ok"
fi
