#!/usr/bin/env bash
# Soak: runs a tcm-server at saturation with mixed traffic for MINUTES and
# watches its resources.
#
#   scripts/soak.sh MINUTES [BUILD_DIR]     (BUILD_DIR defaults to build)
#
# Traffic: tcm-mixed-load (Generate and GenerateStream, 1 and 2 steps, calls
# cancelled at random moments, deadlines shorter than their work, malformed
# requests) from 6 callers, plus a tcm-client process killed with SIGKILL
# mid-call every 2 s. Every 10 s it prints the server's resident memory,
# threads and open files. It passes when
#   - every call ended with a code its kind allows (tcm-mixed-load exits 0),
#   - RSS grew less than 5% from the baseline to the end (baseline: the sample
#     at minute 2, or at half time in runs shorter than 4 minutes),
#   - threads and open files at the end are no more than at the baseline plus
#     a fixed margin (gRPC's pools breathe with load; a leak does not stop),
#   - every image the server accepted is counted as generated or dropped,
#   - the server exits 0 on SIGTERM.
# The last line is "soak: PASS ..." or "soak: FAIL ...".
set -uo pipefail

MINUTES="${1:?usage: scripts/soak.sh MINUTES [BUILD_DIR]}"
BUILD_DIR="${2:-build}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
source "$ROOT/scripts/lib/local-server.sh"
BIN="$(tcm_bin_dir "$BUILD_DIR")"
SAMPLE_EVERY=10
THREAD_MARGIN=8
FD_MARGIN=16

if ! [[ "$MINUTES" =~ ^[0-9]+([.][0-9]+)?$ ]] || [[ "$(awk -v m="$MINUTES" 'BEGIN{print (m < 1)}')" == 1 ]]; then
  echo "soak: MINUTES must be a number, at least 1 (got '$MINUTES')" >&2
  exit 2
fi
tcm_require_tools soak "$BIN" tcm-server tcm-mixed-load tcm-client

WORK="$(mktemp -d)"
SERVER_PID=""
LOAD_PID=""
cleanup() {
  [[ -n "$LOAD_PID" ]] && kill "$LOAD_PID" 2>/dev/null
  [[ -n "$SERVER_PID" ]] && kill -9 "$SERVER_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

fail() {
  echo "soak: FAIL $*"
  echo "--- server log (last 20 lines)"
  tail -20 "$WORK/server.log"
  exit 1
}

metrics() { curl -sf --max-time 10 "http://127.0.0.1:$METRICS_PORT/metrics"; }
# Sum of a metric's samples (all label sets).
metric_sum() { awk -v n="$1" '$1 == n || index($1, n "{") == 1 { s += $NF } END { printf "%.0f", s }' <<< "$2"; }

PORT="$(tcm_free_port)"
METRICS_PORT="$(tcm_free_port)"
"$BIN/tcm-server" --model_repository "$ROOT/models" --default_model fashion-mnist-tcm --port "$PORT" \
  --metrics_port "$METRICS_PORT" --http_port -1 --max_queue_size 256 > "$WORK/server.log" 2>&1 &
SERVER_PID=$!
tcm_wait_serving "$BIN" "$PORT" "$SERVER_PID" || fail "the server exited at start or was not SERVING after 300 s"

SECONDS_TOTAL="$(awk -v m="$MINUTES" 'BEGIN{printf "%d", m * 60}')"
BASELINE_AT=$(( SECONDS_TOTAL >= 240 ? 120 : SECONDS_TOTAL / 2 ))
echo "soak: $MINUTES min, server pid $SERVER_PID on 127.0.0.1:$PORT; samples every ${SAMPLE_EVERY} s, baseline at ${BASELINE_AT} s"

# 6 callers x 4 images at most stay within the queue of 256: no call may be refused.
"$BIN/tcm-mixed-load" --server "127.0.0.1:$PORT" --seconds "$SECONDS_TOTAL" --callers 6 --max_images 4 \
  --seed "${SOAK_SEED:-1}" --progress_every 0 > "$WORK/load.log" 2>&1 &
LOAD_PID=$!

# Client processes killed mid-call, until the load ends.
(
  i=0
  while kill -0 "$LOAD_PID" 2>/dev/null; do
    "$BIN/tcm-client" --server "127.0.0.1:$PORT" --steps 2 --num $(( 1 + i % 8 )) --seed "$i" \
      --out "$WORK/killed" --timeout 300 > /dev/null 2>&1 &
    victim=$!
    sleep "0.$(( 5 + RANDOM % 45 ))"
    kill -9 "$victim" 2>/dev/null
    wait "$victim" 2>/dev/null
    i=$(( i + 1 ))
    sleep 1.5
  done
  echo "$i" > "$WORK/killed.count"
) &
KILLER_PID=$!

sample() {  # prints "RSS_KB THREADS FDS" of the server
  local rss threads fds
  rss="$(awk '/^VmRSS:/ {print $2}' "/proc/$SERVER_PID/status")"
  threads="$(awk '/^Threads:/ {print $2}' "/proc/$SERVER_PID/status")"
  fds="$(ls "/proc/$SERVER_PID/fd" | wc -l)"
  echo "$rss $threads $fds"
}

START=$(date +%s)
BASE=""
LAST=""
next=$SAMPLE_EVERY
while kill -0 "$LOAD_PID" 2>/dev/null; do
  sleep 1
  elapsed=$(( $(date +%s) - START ))
  (( elapsed < next )) && continue
  next=$(( next + SAMPLE_EVERY ))
  kill -0 "$SERVER_PID" 2>/dev/null || fail "the server died at ${elapsed} s"
  LAST="$(sample)"
  read -r rss threads fds <<< "$LAST"
  echo "  t=${elapsed}s rss_kb=$rss threads=$threads open_files=$fds"
  if [[ -z "$BASE" ]] && (( elapsed >= BASELINE_AT )); then BASE="$LAST"; fi
done
wait "$LOAD_PID"
LOAD_STATUS=$?
LOAD_PID=""
wait "$KILLER_PID"
sed -n '/calls, /,$p' "$WORK/load.log"
(( LOAD_STATUS == 0 )) || fail "tcm-mixed-load: a call ended unexpectedly (exit $LOAD_STATUS)"
[[ -n "$BASE" && -n "$LAST" ]] || fail "no samples taken"

# The ledger, once nothing is in flight.
for _ in $(seq 1 120); do
  text="$(metrics)"
  accepted="$(metric_sum tcm_images_accepted_total "$text")"
  ended=$(( $(metric_sum tcm_images_generated_total "$text") + $(metric_sum tcm_images_dropped_total "$text") ))
  in_flight="$(metric_sum tcm_requests_in_flight "$text")"
  [[ "$in_flight" == 0 && "$accepted" == "$ended" ]] && break
  sleep 0.5
done
echo "ledger: accepted $accepted, generated or dropped $ended, in flight $in_flight"
[[ "$accepted" == "$ended" && "$accepted" -gt 0 ]] || fail "the image ledger does not balance"

read -r base_rss base_threads base_fds <<< "$BASE"
read -r end_rss end_threads end_fds <<< "$LAST"
growth="$(awk -v a="$base_rss" -v b="$end_rss" 'BEGIN{printf "%.2f", (b - a) * 100 / a}')"
kill -TERM "$SERVER_PID"
wait "$SERVER_PID"
SERVER_STATUS=$?
SERVER_PID=""
(( SERVER_STATUS == 0 )) || fail "the server exited $SERVER_STATUS on SIGTERM"

summary="rss_kb $base_rss -> $end_rss (${growth}%), threads $base_threads -> $end_threads, open_files $base_fds -> $end_fds, killed clients $(cat "$WORK/killed.count")"
awk -v g="$growth" 'BEGIN{exit !(g < 5)}' || fail "RSS grew ${growth}% (limit 5%): $summary"
(( end_threads <= base_threads + THREAD_MARGIN )) || fail "threads grew: $summary"
(( end_fds <= base_fds + FD_MARGIN )) || fail "open files grew: $summary"
echo "soak: PASS $summary"
