#!/usr/bin/env bash
# Fuzz every decoder fed untrusted bytes: what the edge server takes from the network
# (InferRequest bodies: protobuf, raw frames, PNG/JPEG), what the element takes from the edge
# (InferResponse bodies, manifests) and from upstream (video frames of every supported format,
# stride and size, cut short or not). Needs the nightly toolchain and cargo-fuzz (installed here
# when missing). The committed seed corpus is fuzz/seeds/ (written by scripts/fuzz_seeds.py, plus
# the manifests of the repository); the corpus grows under target/fuzz-corpus/.
#   scripts/fuzz.sh [SECONDS per target, default 300]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-300}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
rustup toolchain list | grep -q nightly || rustup toolchain install nightly --profile minimal
TARGETS="infer_request infer_response manifest frame_mapping"
for t in $TARGETS; do
  mkdir -p "target/fuzz-corpus/$t"
  cp fuzz/seeds/$t/* "target/fuzz-corpus/$t/"
done
cd fuzz
failed=0
for t in $TARGETS; do
  echo "fuzz: $t for $SECS s"
  log="../target/fuzz-$t.log"
  if cargo +nightly fuzz run "$t" "../target/fuzz-corpus/$t" -- \
      -max_total_time="$SECS" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
    grep -E "^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)|^#[0-9]+ +DONE" "$log" || true
    echo "fuzz: $t: no crash, no timeout, no leak ($(ls "../target/fuzz-corpus/$t" | wc -l) corpus entries)"
  else
    failed=1
    grep -E "SUMMARY|panicked|ERROR|Test unit written" "$log" | head -20
    echo "fuzz: $t FAILED (full log: target/fuzz-$t.log; the input is under fuzz/artifacts/$t/)"
  fi
done
exit $failed
