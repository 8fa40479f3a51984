#!/usr/bin/env bash
# Overload without collapse: measures a tcm-server's capacity, then offers it
# three times that, open loop, first without deadlines, then with a deadline
# on every call.
#
#   scripts/overload.sh [BUILD_DIR] [SECONDS] [DEADLINE_S]   (defaults: build, 30, auto)
#
# Traffic: requests of 4 one-step images of the embedded default model.
# Capacity: tcm-bench closed loop at concurrency 8 for SECONDS. Each overload
# level: tcm-bench open loop at 3 x capacity for SECONDS (after 5 s of
# warm-up).
#   1. No deadlines, while a health Check probes every 0.25 s (tcm-client
#      --health --health_every 0.25: one connection, 2 s deadline per check).
#   2. Every call with a DEADLINE_S deadline: the goodput (images of calls
#      answered within their deadline, per second). auto: half the time the
#      server needs to compute a full queue (QUEUE_IMAGES, passed to the
#      servers as --max_queue_size) at the measured capacity, so that the
#      backlog always holds twice a deadline's work, whatever the machine's
#      speed (with a longer deadline nothing in the queue is ever late).
#   3. The same on a second server started with --deadline_aware_batching=false
#      (first come, first served), for comparison in the same run.
# It passes when
#   - every health probe answered SERVING,
#   - the full queue refused at once: p99 of the RESOURCE_EXHAUSTED answers
#     under 5 ms,
#   - images/s delivered without deadlines stay at least 0.9 of the capacity,
#   - with deadlines, the goodput is at least 0.8 of the capacity and the
#     server dropped images it could not finish in time before computing them
#     (tcm_images_dropped_total{reason="deadline_unmeetable"} > 0).
# The last line is "overload: PASS ..." or "overload: FAIL ...".
#
# Environment: SERVER_CPUS and LOAD_CPUS (taskset CPU lists, e.g. 0 and 1) pin
# the server and the load (tcm-bench, the health probe) to separate cores, so
# that the generator's own work is not taken from the server; capacity and
# overload are then both measured on the server's cores alone. Unset: both
# share every core.
set -uo pipefail

BUILD_DIR="${1:-build}"
SECONDS_PER_LEVEL="${2:-30}"
DEADLINE_S="${3:-auto}"
QUEUE_IMAGES=256
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
source "$ROOT/scripts/lib/local-server.sh"
BIN="$(tcm_bin_dir "$BUILD_DIR")"
tcm_require_tools overload "$BIN" tcm-server tcm-bench tcm-client
command -v jq > /dev/null || { echo "overload: needs jq (scripts/install-deps.sh)" >&2; exit 2; }
command -v curl > /dev/null || { echo "overload: needs curl (scripts/install-deps.sh)" >&2; exit 2; }

SERVER_PIN=()
LOAD_PIN=()
if [[ -n "${SERVER_CPUS:-}" ]]; then SERVER_PIN=(taskset -c "$SERVER_CPUS"); fi
if [[ -n "${LOAD_CPUS:-}" ]]; then LOAD_PIN=(taskset -c "$LOAD_CPUS"); fi

WORK="$(mktemp -d)"
SERVER_PID=""
cleanup() {
  [[ -n "$SERVER_PID" ]] && kill -9 "$SERVER_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() {
  echo "overload: FAIL $*"
  exit 1
}

# start_server NAME [FLAGS...]: starts a server on free ports; sets PORT, METRICS_PORT, SERVER_PID.
start_server() {
  local name="$1"
  shift
  PORT="$(tcm_free_port)"
  METRICS_PORT="$(tcm_free_port)"
  "${SERVER_PIN[@]}" "$BIN/tcm-server" --model_repository "$ROOT/models" --default_model fashion-mnist-tcm --port "$PORT" \
    --metrics_port "$METRICS_PORT" --http_port -1 --max_queue_size "$QUEUE_IMAGES" "$@" > "$WORK/$name.log" 2>&1 &
  SERVER_PID=$!
  tcm_wait_serving "$BIN" "$PORT" "$SERVER_PID" ||
    fail "the server exited at start or was not SERVING after 300 s: $(tail -5 "$WORK/$name.log")"
}
stop_server() {
  kill -TERM "$SERVER_PID"
  wait "$SERVER_PID"
  SERVER_PID=""
}
# unmeetable_drops: the server's tcm_images_dropped_total{reason="deadline_unmeetable"} (0 when absent).
unmeetable_drops() {
  curl -s "127.0.0.1:$METRICS_PORT/metrics" |
    awk '/^tcm_images_dropped_total\{/ && /reason="deadline_unmeetable"/ {s += $NF} END {print s + 0}'
}
# bench NAME [FLAGS...]: one tcm-bench level against PORT, its JSON in $WORK/NAME.json.
bench() {
  local name="$1"
  shift
  "${LOAD_PIN[@]}" "$BIN/tcm-bench" --server "127.0.0.1:$PORT" --images_per_request 4 --two_step_fraction 0 \
    --duration "$SECONDS_PER_LEVEL" --warmup 5 --json "$WORK/$name.json" "$@" > "$WORK/$name.txt" ||
    fail "tcm-bench $name failed: $(tail -3 "$WORK/$name.txt")"
  echo "--- $name"
  cat "$WORK/$name.txt"
}
level() { jq ".levels[0].$2 // 0" "$WORK/$1.json"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", a / b}'; }

start_server deadline_aware
bench capacity --concurrency 8
capacity="$(level capacity images_per_s)"
rate="$(awk -v c="$capacity" 'BEGIN{printf "%.2f", 3 * c / 4}')"
echo "capacity: $capacity images/s (concurrency 8, 4 one-step images per call); offering $rate calls/s = 3 x capacity"
if [[ "$DEADLINE_S" == auto ]]; then
  DEADLINE_S="$(awk -v q="$QUEUE_IMAGES" -v c="$capacity" 'BEGIN{printf "%.3f", 0.5 * q / c}')"
  echo "deadline: $DEADLINE_S s (half of $QUEUE_IMAGES queued images' time at capacity)"
fi

# Health probes for as long as the overload without deadlines runs.
"${LOAD_PIN[@]}" "$BIN/tcm-client" --server "127.0.0.1:$PORT" --health --health_every 0.25 --timeout 2 > "$WORK/health.txt" 2>&1 &
PROBE_PID=$!
bench overload --rates "$rate" --timeout 600 --max_inflight 100000
kill "$PROBE_PID"
wait "$PROBE_PID" 2>/dev/null

bench deadline --rates "$rate" --timeout "$DEADLINE_S" --max_inflight 100000
unmeetable="$(unmeetable_drops)"
stop_server

start_server fifo --deadline_aware_batching=false
bench deadline_fifo --rates "$rate" --timeout "$DEADLINE_S" --max_inflight 100000
stop_server

delivered="$(level overload images_per_s)"
rejected="$(level overload rejected_latency_ms.count)"
rejected_p99="$(level overload rejected_latency_ms.p99)"
ok_p99="$(level overload latency_ms.p99)"
probes="$(wc -l < "$WORK/health.txt")"
answered="$(awk '$1 == "SERVING"' "$WORK/health.txt" | wc -l)"
probe_max="$(awk 'BEGIN{m=0} $2 > m {m=$2} END{print m}' "$WORK/health.txt")"
delivered_ratio="$(ratio "$delivered" "$capacity")"
goodput="$(level deadline goodput_images_per_s)"
goodput_ratio="$(ratio "$goodput" "$capacity")"
goodput_fifo="$(level deadline_fifo goodput_images_per_s)"
goodput_fifo_ratio="$(ratio "$goodput_fifo" "$capacity")"
summary="capacity $capacity img/s, offered 3x; no deadlines: delivered $delivered img/s ($delivered_ratio of capacity), OK p99 ${ok_p99} ms, $rejected refused (p99 ${rejected_p99} ms), health $answered/$probes SERVING (slowest probe ${probe_max} ms); ${DEADLINE_S} s deadlines: goodput $goodput img/s ($goodput_ratio of capacity, $unmeetable images dropped as unmeetable), first come first served $goodput_fifo img/s ($goodput_fifo_ratio)"

(( answered == probes && probes > 0 )) || fail "health stopped answering: $summary"
(( rejected > 0 )) || fail "the queue never filled, so nothing was shown: $summary"
awk -v p="$rejected_p99" 'BEGIN{exit !(p < 5)}' || fail "refusals were slow: $summary"
awk -v r="$delivered_ratio" 'BEGIN{exit !(r >= 0.9)}' || fail "throughput collapsed: $summary"
awk -v r="$goodput_ratio" 'BEGIN{exit !(r >= 0.8)}' || fail "goodput under deadlines collapsed: $summary"
(( unmeetable > 0 )) || fail "no image was dropped as unmeetable: $summary"
echo "overload: PASS $summary"
