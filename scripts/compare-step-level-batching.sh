#!/usr/bin/env bash
# Step-level batching against batching 1- and 2-step requests apart, on one
# model, measured in alternating short windows so that both modes see the same
# drift of the machine's speed (docs/PERFORMANCE.md).
#
#   scripts/compare-step-level-batching.sh [MODEL] [CONCURRENCY] [PAIRS] [WINDOW_S]
#
# MODEL (default fashion-mnist-tcm), CONCURRENCY closed-loop clients (default
# 8), PAIRS window pairs (default 20), WINDOW_S seconds each (default 5).
# Starts two tcm-servers on free ports over the repository MODELS (default
# models), one with --step_level_batching=true and one with false, both with
# --max_batch_size 16; runs PAIRS pairs of 50/50-mix tcm-bench windows in the
# order A B, B A, A B, ... and prints each pair, then a summary: mean images/s
# of each mode, the median of the per-pair ratios, how many pairs step-level
# won, the two-sided sign-test p-value, and each server's forward passes and
# mean rows per pass (from its tcm_batch_size histogram). Each window's JSON
# and the server logs stay in OUT_DIR (default: a temporary directory).
set -euo pipefail
model="${1:-fashion-mnist-tcm}"
concurrency="${2:-8}"
pairs="${3:-20}"
window="${4:-5}"
bin="${TCM_BIN:-build/bin}"
repository="${MODELS:-models}"
out="${OUT_DIR:-$(mktemp -d)}"
mkdir -p "$out"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2> /dev/null || true; done; wait 2> /dev/null || true; }
trap cleanup EXIT

# start_server MODE: starts a server on free ports; sets PORT and METRICS_PORT
# once it serves (it prints its ports then).
start_server() {
  local log="$out/server-$1.log" line
  "$bin/tcm-server" --model_repository "$repository" --port 0 --metrics_port 0 --http_port -1 --max_batch_size 16 \
    --step_level_batching="$1" > "$log" 2>&1 &
  pids+=($!)
  for _ in $(seq 600); do
    line="$(grep -m1 "serving" "$log" || true)"
    [[ -n "$line" ]] && break
    kill -0 "${pids[-1]}" 2> /dev/null || break
    sleep 0.2
  done
  [[ -n "$line" ]] || { echo "tcm-server --step_level_batching=$1 did not start:" >&2; cat "$log" >&2; exit 1; }
  PORT="$(sed -E 's/.* on port ([0-9]+) .*/\1/' <<< "$line")"
  METRICS_PORT="$(sed -E 's/.*metrics on port ([0-9]+).*/\1/' <<< "$line")"
}
start_server true
step_port=$PORT step_metrics=$METRICS_PORT
start_server false
apart_port=$PORT apart_metrics=$METRICS_PORT

window_run() {  # window_run MODE PORT PAIR
  "$bin/tcm-bench" --server "127.0.0.1:$2" --model "$model" --concurrency "$concurrency" \
    --two_step_fraction 0.5 --duration "$window" --warmup 1 --connect_timeout 120 \
    --json "$out/$1-$3.json" > /dev/null
}

echo "model $model, concurrency $concurrency, $pairs pairs of ${window} s windows; JSON in $out"
for ((i = 1; i <= pairs; i++)); do
  if ((i % 2)); then
    window_run step_level "$step_port" "$i"
    window_run apart "$apart_port" "$i"
  else
    window_run apart "$apart_port" "$i"
    window_run step_level "$step_port" "$i"
  fi
done
curl -sf "127.0.0.1:$step_metrics/metrics" > "$out/metrics-step_level.txt"
curl -sf "127.0.0.1:$apart_metrics/metrics" > "$out/metrics-apart.txt"

/usr/bin/python3 - "$out" "$pairs" "$model" << 'PY'
import json, math, statistics, sys
out, pairs, model = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def rate(mode, i):
    return json.load(open(f"{out}/{mode}-{i}.json"))["levels"][0]["images_per_s"]
def passes(mode):
    """(forward passes, rows) of MODEL from the server's tcm_batch_size histogram."""
    found = {}
    for line in open(f"{out}/metrics-{mode}.txt"):
        for part in ("sum", "count"):
            if line.startswith(f"tcm_batch_size_{part}{{") and f'model="{model}"' in line:
                found[part] = float(line.split()[-1])
    return found["count"], found["sum"]
step = [rate("step_level", i) for i in range(1, pairs + 1)]
apart = [rate("apart", i) for i in range(1, pairs + 1)]
print(f"{'pair':>4} {'step-level img/s':>17} {'apart img/s':>12} {'ratio':>6}")
for i, (s, a) in enumerate(zip(step, apart), 1):
    print(f"{i:>4} {s:>17.1f} {a:>12.1f} {s / a:>6.3f}")
wins = sum(s > a for s, a in zip(step, apart))
n = sum(s != a for s, a in zip(step, apart))
tail = sum(math.comb(n, k) for k in range(0, min(wins, n - wins) + 1)) / 2 ** n
p = min(1.0, 2 * tail)
print(f"mean img/s: step-level {statistics.mean(step):.1f}, apart {statistics.mean(apart):.1f}; "
      f"median ratio {statistics.median(s / a for s, a in zip(step, apart)):.3f}; "
      f"step-level ahead in {wins} of {pairs} pairs (sign test p = {p:.3g})")
for mode in ("step_level", "apart"):
    count, rows = passes(mode)
    print(f"server {mode}: {count:.0f} forward passes, {rows / count:.2f} rows per pass (warm-up included)")
PY
