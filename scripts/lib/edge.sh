# Sourced by the scripts that run a local cachenet-edge: start_edge BIN MODEL_DIR PORT [LOG]
# starts it on 127.0.0.1:PORT (stderr to LOG, default /dev/null), stops it when the script exits,
# and returns once it answers /health/ready (10 s at most).
start_edge() {
  local bin=$1 models=$2 port=$3 log=${4:-/dev/null}
  "$bin" --model-dir "$models" --listen "127.0.0.1:$port" 2>"$log" &
  EDGE_PID=$!
  trap 'kill $EDGE_PID 2>/dev/null || true' EXIT
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "cachenet-edge did not become ready on port $port" >&2
  return 1
}
