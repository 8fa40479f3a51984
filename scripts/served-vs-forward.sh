#!/usr/bin/env bash
# The service against its own network: the forward pass that tcm-model-bench
# measures, and what a tcm-server running that network delivers, in one run.
#
#   scripts/served-vs-forward.sh [BUILD_DIR] [PRECISION...]   (defaults: build, bf16 fp32)
#
# The server and the forward pass run on core 0 (one intra-op thread), the load
# generator on core 1 (taskset), so that the generator's own work does not
# count against the server. This machine's speed drifts by as much as the two
# sides differ within a minute, so each precision is measured in ROUNDS rounds
# (environment variable, default 5) of the two sides in turn, with one server
# kept running through them:
#   1. tcm-model-bench --threads 1 on core 0: the forward pass at batch 1 and 16;
#   2. the server on core 0 (the embedded default model, batches of 16) loaded by
#      tcm-bench at concurrency 8 with 4 one-step images per call (32 images in
#      flight: full batches), RAW images: images/s served;
#   3. the same server at concurrency 1, one image per call: median latency.
# Prints one line per round and, per precision, the medians of the rounds'
# ratio and latency difference:
#   served-vs-forward: P round K: forward F img/s (batch 16), served S img/s, ratio R; batch 1 pass B ms, served p50 L ms (+D ms)
#   served-vs-forward: P: median of N rounds: ratio R, served p50 minus batch 1 pass +D ms
set -euo pipefail
BUILD_DIR="${1:-build}"
shift || true
PRECISIONS=("$@")
ROUNDS="${ROUNDS:-5}"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "served-vs-forward: ROUNDS must be a positive integer, not '$ROUNDS'" >&2; exit 2; }
[[ ${#PRECISIONS[@]} -gt 0 ]] || PRECISIONS=(bf16 fp32)
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
source "$ROOT/scripts/lib/local-server.sh"
BIN="$(tcm_bin_dir "$BUILD_DIR")"
tcm_require_tools served-vs-forward "$BIN" tcm-server tcm-bench tcm-model-bench tcm-client
command -v jq > /dev/null || { echo "served-vs-forward: needs jq (scripts/install-deps.sh)" >&2; exit 2; }
[[ "$(nproc)" -ge 2 ]] || { echo "served-vs-forward: needs two cores (server and load apart)" >&2; exit 2; }

WORK="$(mktemp -d)"
SERVER_PID=""
cleanup() {
  if [[ -n "$SERVER_PID" ]]; then kill -9 "$SERVER_PID" 2> /dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# median: prints the median of the numbers on stdin, one per line.
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

for precision in "${PRECISIONS[@]}"; do
  port="$(tcm_free_port)"
  taskset -c 0 "$BIN/tcm-server" --model_repository "$ROOT/models" --default_model fashion-mnist-tcm \
    --port "$port" --metrics_port -1 --http_port -1 --precision "$precision" --max_batch_size 16 \
    > "$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  tcm_wait_serving "$BIN" "$port" "$SERVER_PID" || { tail -5 "$WORK/server.log"; exit 1; }
  bench() {
    taskset -c 1 "$BIN/tcm-bench" --server "127.0.0.1:$port" --two_step_fraction 0 --format raw "$@" \
      > "$WORK/bench.txt" || { cat "$WORK/bench.txt"; exit 1; }
  }
  : > "$WORK/ratios"
  : > "$WORK/deltas"
  for round in $(seq 1 "$ROUNDS"); do
    taskset -c 0 "$BIN/tcm-model-bench" --model_dir "$ROOT/models/fashion-mnist-tcm" --batch_sizes 1,16 --seconds 3 \
      --precision "$precision" --threads 1 --conv_ceiling=false --json "$WORK/forward.json" > "$WORK/forward.txt"
    forward16="$(jq '.rows[] | select(.batch == 16) | .images_per_second' "$WORK/forward.json")"
    forward1_ms="$(jq '.rows[] | select(.batch == 1) | .ms_per_batch' "$WORK/forward.json")"
    bench --concurrency 8 --images_per_request 4 --warmup 3 --duration 8 --json "$WORK/saturated.json"
    served="$(jq '.levels[0].images_per_s' "$WORK/saturated.json")"
    bench --concurrency 1 --images_per_request 1 --warmup 2 --duration 6 --json "$WORK/single.json"
    p50="$(jq '.levels[0].latency_ms.p50' "$WORK/single.json")"
    read -r ratio delta < <(awk -v f="$forward16" -v s="$served" -v b="$forward1_ms" -v l="$p50" \
      'BEGIN { printf "%.6f %.6f\n", s / f, l - b }')
    echo "$ratio" >> "$WORK/ratios"
    echo "$delta" >> "$WORK/deltas"
    awk -v p="$precision" -v k="$round" -v f="$forward16" -v s="$served" -v r="$ratio" -v b="$forward1_ms" \
      -v l="$p50" -v d="$delta" 'BEGIN {
      printf "served-vs-forward: %s round %d: forward %.1f img/s (batch 16), served %.1f img/s, ratio %.3f; batch 1 pass %.2f ms, served p50 %.2f ms (%+.2f ms)\n",
             p, k, f, s, r, b, l, d }'
  done
  kill -TERM "$SERVER_PID"
  wait "$SERVER_PID" || true
  SERVER_PID=""
  awk -v p="$precision" -v n="$ROUNDS" -v r="$(median < "$WORK/ratios")" -v d="$(median < "$WORK/deltas")" 'BEGIN {
    printf "served-vs-forward: %s: median of %d rounds: ratio %.3f, served p50 minus batch 1 pass %+.2f ms\n", p, n, r, d }'
done
