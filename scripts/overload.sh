#!/usr/bin/env bash
# Overload without collapse: measures a tcm-server's capacity, then offers it
# three times that, open loop, with no deadlines, while probing its health.
#
#   scripts/overload.sh [BUILD_DIR] [SECONDS]     (defaults: build, 30)
#
# Traffic: requests of 4 one-step images of the embedded default model.
# Capacity: tcm-bench closed loop at concurrency 8 for SECONDS. Overload:
# tcm-bench open loop at 3 x capacity for SECONDS (after 5 s of warm-up),
# and meanwhile a health Check every 0.25 s (tcm-client --health, 2 s
# deadline). It passes when
#   - every health probe answered SERVING,
#   - the full queue refused at once: p99 of the RESOURCE_EXHAUSTED answers
#     under 5 ms,
#   - images/s delivered under overload stay at least 0.9 of the capacity.
# The last line is "overload: PASS ..." or "overload: FAIL ...".
set -uo pipefail

BUILD_DIR="${1:-build}"
SECONDS_PER_LEVEL="${2:-30}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
source "$ROOT/scripts/lib/local-server.sh"
BIN="$(tcm_bin_dir "$BUILD_DIR")"
tcm_require_tools overload "$BIN" tcm-server tcm-bench tcm-client
command -v jq > /dev/null || { echo "overload: needs jq (scripts/install-deps.sh)" >&2; exit 2; }

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

PORT="$(tcm_free_port)"
"$BIN/tcm-server" --model_repository "$ROOT/models" --default_model fashion-mnist-tcm --port "$PORT" \
  --metrics_port -1 > "$WORK/server.log" 2>&1 &
SERVER_PID=$!
tcm_wait_serving "$BIN" "$PORT" "$SERVER_PID" ||
  fail "the server exited at start or was not SERVING after 300 s: $(tail -5 "$WORK/server.log")"

BENCH=("$BIN/tcm-bench" --server "127.0.0.1:$PORT" --images_per_request 4 --two_step_fraction 0
       --duration "$SECONDS_PER_LEVEL" --warmup 5)
"${BENCH[@]}" --concurrency 8 --json "$WORK/capacity.json" > "$WORK/capacity.txt" || fail "capacity run failed"
capacity="$(jq '.levels[0].images_per_s' "$WORK/capacity.json")"
rate="$(awk -v c="$capacity" 'BEGIN{printf "%.2f", 3 * c / 4}')"
echo "capacity: $capacity images/s (concurrency 8, 4 one-step images per call); offering $rate calls/s = 3 x capacity"

# Health probes for as long as the overload runs.
(
  while [[ ! -e "$WORK/done" ]]; do
    t0=$(date +%s%N)
    if "$BIN/tcm-client" --server "127.0.0.1:$PORT" --health --timeout 2 > /dev/null 2>&1; then ok=1; else ok=0; fi
    echo "$ok $(( ($(date +%s%N) - t0) / 1000000 ))" >> "$WORK/health.txt"
    sleep 0.25
  done
) &
PROBE_PID=$!
"${BENCH[@]}" --rates "$rate" --timeout 600 --max_inflight 100000 --json "$WORK/overload.json" \
  > "$WORK/overload.txt" || fail "overload run failed"
touch "$WORK/done"
wait "$PROBE_PID"
cat "$WORK/overload.txt"

level='.levels[0]'
delivered="$(jq "$level.images_per_s" "$WORK/overload.json")"
rejected="$(jq "$level.rejected_latency_ms.count" "$WORK/overload.json")"
rejected_p99="$(jq "$level.rejected_latency_ms.p99 // 0" "$WORK/overload.json")"
ok_p99="$(jq "$level.latency_ms.p99 // 0" "$WORK/overload.json")"
probes="$(wc -l < "$WORK/health.txt")"
answered="$(awk '$1 == 1' "$WORK/health.txt" | wc -l)"
probe_max="$(awk 'BEGIN{m=0} $2 > m {m=$2} END{print m}' "$WORK/health.txt")"
ratio="$(awk -v d="$delivered" -v c="$capacity" 'BEGIN{printf "%.3f", d / c}')"
summary="capacity $capacity img/s, offered 3x, delivered $delivered img/s ($ratio of capacity), OK p99 ${ok_p99} ms, $rejected refused (p99 ${rejected_p99} ms), health $answered/$probes SERVING (slowest probe ${probe_max} ms, process start included)"

kill -TERM "$SERVER_PID"
wait "$SERVER_PID"
SERVER_PID=""
(( answered == probes && probes > 0 )) || fail "health stopped answering: $summary"
(( rejected > 0 )) || fail "the queue never filled, so nothing was shown: $summary"
awk -v p="$rejected_p99" 'BEGIN{exit !(p < 5)}' || fail "refusals were slow: $summary"
awk -v r="$ratio" 'BEGIN{exit !(r >= 0.9)}' || fail "throughput collapsed: $summary"
echo "overload: PASS $summary"
