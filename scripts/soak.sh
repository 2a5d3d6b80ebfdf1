#!/usr/bin/env bash
# Load and long runs, release build, with recorded figures (README, "Reliability"):
#  1. 1, 8 and 64 concurrent clients against one cachenet-edge (shipped set) for SECONDS each;
#  2. FRAMES frames through cachenetclassify (offload=async, frequent misses: noise frames) with
#     the process's RSS, threads and open files sampled every 2 s;
#  3. CYCLES NULL -> PLAYING -> NULL cycles of a pipeline with the element and an edge, in one
#     process (PyGObject), RSS, threads and open files after 100 cycles and at the end;
#  4. a live source faster than inference (100 frames/s into the full model, mode=device): how
#     late frames reach a synchronised sink after LIVE seconds, as they are, behind a leaky queue,
#     and with skip-late (QoS); the last two must stay under 0.5 s.
#   scripts/soak.sh [SECONDS] [FRAMES] [CYCLES] [LIVE]     (default 30 100000 1000 8; 0 skips a part)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH="${1:-30}"
FRAMES="${2:-100000}"
CYCLES="${3:-1000}"
LIVE="${4:-8}"
REL="${CARGO_TARGET_DIR:-$PWD/target}/release"
[ -x "$REL/cachenet-load" ] && [ -f "$REL/libgstcachenet.so" ] || cargo build --release --workspace
export GST_PLUGIN_PATH="$REL"

if [ "$SECONDS_EACH" -gt 0 ]; then
echo "## 1. Concurrent clients, ${SECONDS_EACH} s each (edge with default flags, shipped set)"
"$REL/cachenet-load" --edge-bin "$REL/cachenet-edge" --model-dir models/fashion-mnist \
  --clients 1,8,64 --seconds "$SECONDS_EACH"
fi

if [ "$FRAMES" -gt 0 ]; then
. scripts/lib/edge.sh
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
start_edge "$REL/cachenet-edge" models/fashion-mnist "$PORT"

echo
echo "## 2. $FRAMES frames, offload=async, noise frames (frequent misses)"
gst-launch-1.0 -q videotestsrc num-buffers="$FRAMES" pattern=snow \
    ! video/x-raw,format=GRAY8,width=64,height=48,framerate=1000/1 \
    ! cachenetclassify offload=async edge-url="http://127.0.0.1:$PORT" model-dir=models/fashion-mnist \
      post-messages=false ! fakesink &
GST=$!
samples=()
while kill -0 $GST 2>/dev/null; do
  if [ -r /proc/$GST/status ]; then
    rss=$(awk '/^VmRSS:/ {print $2}' /proc/$GST/status 2>/dev/null || echo 0)
    thr=$(ls /proc/$GST/task 2>/dev/null | wc -l)
    fds=$(ls /proc/$GST/fd 2>/dev/null | wc -l)
    [ -n "$rss" ] && [ "$rss" != 0 ] && samples+=("$(date +%s) $rss $thr $fds")
  fi
  sleep 2
done
wait $GST
printf '%s\n' "${samples[@]}" | awk -v frames="$FRAMES" '
  NR == 1 { t0 = $1 }
  { t[NR] = $1; r[NR] = $2; th[NR] = $3; fd[NR] = $4; if ($3 > maxth) maxth = $3; if ($4 > maxfd) maxfd = $4 }
  END {
    w = int(NR / 10) + 2; if (w > NR) w = NR   # warm-up: the first tenth of the run
    printf "%d samples over %d s (%.0f frames/s); RSS after warm-up %.1f MB, at the end %.1f MB (%+.1f %%); ", \
      NR, t[NR] - t0, frames / (t[NR] - t0 + 2), r[w] / 1024, r[NR] / 1024, 100 * (r[NR] - r[w]) / r[w]
    printf "threads %d..%d; open files %d..%d\n", th[w], maxth, fd[w], maxfd
  }'
fi

if [ "$CYCLES" -gt 0 ]; then
echo
echo "## 3. $CYCLES NULL -> PLAYING -> NULL cycles (tiny set, with an edge)"
TPORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$REL/cachenet-edge" --model-dir tests/fixtures/tiny --listen "127.0.0.1:$TPORT" 2>/dev/null &
TEDGE=$!
trap 'kill ${EDGE_PID:-} $TEDGE 2>/dev/null || true' EXIT
sleep 1
/usr/bin/python3 - "$CYCLES" "$TPORT" <<'PY'
import os, sys
import gi
gi.require_version("Gst", "1.0")
from gi.repository import Gst
Gst.init(None)
cycles, port = int(sys.argv[1]), sys.argv[2]
def rss():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) / 1024
p = Gst.parse_launch(
    "videotestsrc num-buffers=5 pattern=white ! video/x-raw,format=GRAY8,width=16,height=16 ! "
    f"cachenetclassify model-dir=tests/fixtures/tiny edge-url=http://127.0.0.1:{port} ! fakesink")
bus = p.get_bus()
marks = {}
first = max(1, min(100, cycles // 10))
for i in range(1, cycles + 1):
    p.set_state(Gst.State.PLAYING)
    m = bus.timed_pop_filtered(10 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
    if m is None or m.type == Gst.MessageType.ERROR:
        sys.exit(f"cycle {i}: {m.parse_error() if m else 'no EOS within 10 s'}")
    p.set_state(Gst.State.NULL)
    if i in (first, cycles):
        marks[i] = (rss(), len(os.listdir("/proc/self/task")), len(os.listdir("/proc/self/fd")))
(r1, t1, f1), (r2, t2, f2) = marks[first], marks[cycles]
print(f"{cycles} cycles: RSS {r1:.1f} MB after {first}, {r2:.1f} MB after {cycles} ({100 * (r2 - r1) / r1:+.1f} %); "
      f"threads {t1} -> {t2}; open files {f1} -> {f2}")
PY

fi

if [ "$LIVE" -gt 0 ]; then
echo
echo "## 4. A live source faster than inference (${LIVE} s each)"
/usr/bin/python3 - "$LIVE" <<'PY'
import sys
import gi
gi.require_version("Gst", "1.0")
from gi.repository import Gst
Gst.init(None)
seconds = float(sys.argv[1])
SRC = ("videotestsrc is-live=true pattern=snow ! "
       "video/x-raw,format=GRAY8,width=64,height=48,framerate=100/1 ! ")
EL = "cachenetclassify mode=device model-dir=models/fashion-mnist post-messages=false"
SINK = " ! fakesink name=sink sync=true qos=true"
cases = [
    ("as it is (skip-late=false)", SRC + EL + " skip-late=false" + SINK),
    ("queue leaky=downstream max-size-buffers=2", SRC + "queue leaky=downstream max-size-buffers=2 ! "
     + EL + " skip-late=false" + SINK),
    ("skip-late=true (QoS)", SRC + EL + " skip-late=true" + SINK),
]
bounded = True
for i, (name, desc) in enumerate(cases):
    p = Gst.parse_launch(desc)
    late = []
    def probe(pad, info, p=p, late=late):
        clock = p.get_clock()
        if clock is not None:
            now = clock.get_time() - p.get_base_time()
            late.append((now, (now - info.get_buffer().pts) / Gst.SECOND))
        return Gst.PadProbeReturn.OK
    p.get_by_name("sink").get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, probe)
    p.set_state(Gst.State.PLAYING)
    m = p.get_bus().timed_pop_filtered(int(seconds * Gst.SECOND), Gst.MessageType.ERROR)
    p.set_state(Gst.State.NULL)
    if m is not None:
        sys.exit(f"{name}: {m.parse_error()}")
    last = [l for t, l in late if t >= (seconds - 1) * Gst.SECOND]
    worst = max(last) if last else float("inf")
    print(f"{name}: {len(late)} frames reached the sink in {seconds:.0f} s; "
          f"lateness in the last second up to {worst * 1000:.0f} ms")
    if i > 0 and worst >= 0.5:
        bounded = False
sys.exit(0 if bounded else "latency built up behind a leaky queue or with skip-late")
PY
fi
