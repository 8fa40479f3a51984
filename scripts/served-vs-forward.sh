#!/usr/bin/env bash
# The service against its own network: the forward pass that tcm-model-bench
# measures, and what a tcm-server running that network delivers, in one run.
#
#   scripts/served-vs-forward.sh [BUILD_DIR] [PRECISION...]   (defaults: build, bf16 fp32)
#
# The server and the forward pass run on core 0 (one intra-op thread), the load
# generator on core 1 (taskset), so that the generator's own work does not
# count against the server. For each precision:
#   1. tcm-model-bench --threads 1 on core 0: the forward pass at batch 1 and 16;
#   2. a server on core 0 (the embedded default model, batches of 16) loaded by
#      tcm-bench at concurrency 8 with 4 one-step images per call (32 images in
#      flight: full batches), RAW images: images/s served;
#   3. the same server at concurrency 1, one image per call: median latency.
# Prints one line per precision:
#   served-vs-forward: P: forward F img/s (batch 16), served S img/s, ratio R; batch 1 pass B ms, served p50 L ms (+D ms)
set -euo pipefail
BUILD_DIR="${1:-build}"
shift || true
PRECISIONS=("$@")
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

for precision in "${PRECISIONS[@]}"; do
  taskset -c 0 "$BIN/tcm-model-bench" --model_dir "$ROOT/models/fashion-mnist-tcm" --batch_sizes 1,16 --seconds 5 \
    --precision "$precision" --threads 1 --conv_ceiling=false --json "$WORK/forward.json" > "$WORK/forward.txt"
  forward16="$(jq '.rows[] | select(.batch == 16) | .images_per_second' "$WORK/forward.json")"
  forward1_ms="$(jq '.rows[] | select(.batch == 1) | .ms_per_batch' "$WORK/forward.json")"

  port="$(tcm_free_port)"
  taskset -c 0 "$BIN/tcm-server" --model_repository "$ROOT/models" --default_model fashion-mnist-tcm \
    --port "$port" --metrics_port -1 --http_port -1 --precision "$precision" --max_batch_size 16 \
    > "$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  tcm_wait_serving "$BIN" "$port" "$SERVER_PID" || { tail -5 "$WORK/server.log"; exit 1; }
  bench() {
    taskset -c 1 "$BIN/tcm-bench" --server "127.0.0.1:$port" --two_step_fraction 0 --format raw --warmup 5 "$@" \
      > "$WORK/bench.txt" || { cat "$WORK/bench.txt"; exit 1; }
  }
  bench --concurrency 8 --images_per_request 4 --duration 20 --json "$WORK/saturated.json"
  served="$(jq '.levels[0].images_per_s' "$WORK/saturated.json")"
  bench --concurrency 1 --images_per_request 1 --duration 15 --json "$WORK/single.json"
  p50="$(jq '.levels[0].latency_ms.p50' "$WORK/single.json")"
  kill -TERM "$SERVER_PID"
  wait "$SERVER_PID" || true
  SERVER_PID=""

  awk -v p="$precision" -v f="$forward16" -v s="$served" -v b="$forward1_ms" -v l="$p50" 'BEGIN {
    printf "served-vs-forward: %s: forward %.1f img/s (batch 16), served %.1f img/s, ratio %.3f; batch 1 pass %.2f ms, served p50 %.2f ms (%+.2f ms)\n",
           p, f, s, s / f, b, l, l - b }'
done
