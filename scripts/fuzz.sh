#!/usr/bin/env bash
# Fuzz the inputs the edge server and the element take from the network: InferRequest bodies
# (protobuf, raw frames, PNG/JPEG) and manifests. Needs the nightly toolchain and cargo-fuzz
# (installed here when missing). Seeds come from the test fixtures and the shipped set.
#   scripts/fuzz.sh [SECONDS per target, default 300]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-300}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
rustup toolchain list | grep -q nightly || rustup toolchain install nightly --profile minimal
mkdir -p target/fuzz-corpus/infer_request target/fuzz-corpus/manifest
cp tests/fixtures/tiny/manifest.json target/fuzz-corpus/manifest/tiny.json
cp models/fashion-mnist/manifest.json target/fuzz-corpus/manifest/fashion-mnist.json
python3 scripts/fuzz_seeds.py target/fuzz-corpus/infer_request
cd fuzz
failed=0
for t in infer_request manifest; do
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
