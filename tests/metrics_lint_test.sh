#!/usr/bin/env bash
# The metrics endpoint after real traffic passes `promtool check metrics`
# (Prometheus naming and help conventions) with nothing reported.
set -uo pipefail
server="$1"; client="$2"; convert="$3"; fixtures="$4"
source "$(dirname "$0")/server_lib.sh"
tmp="$TMP"

"$convert" --input "$fixtures/ddpmpp_cond_tiny.weights.safetensors" --output "$tmp/repo/cond" > /dev/null || exit 1
start_server "$server" "$tmp/repo" --metrics_port 0
grpc_port="$GRPC_PORT"
metrics_port="$METRICS_PORT"

"$client" --server "127.0.0.1:$grpc_port" --num 3 --steps 2 --out "$tmp/out" > /dev/null || exit 1
"$client" --server "127.0.0.1:$grpc_port" --steps 5 > /dev/null 2>&1 && { echo "steps 5 was accepted"; exit 1; }

curl -sf "http://127.0.0.1:$metrics_port/metrics" > "$tmp/metrics.txt" || { echo "no metrics"; exit 1; }
grep -q '^tcm_images_generated_total{model="cond",steps="2"} 3$' "$tmp/metrics.txt" || { echo "images not counted"; exit 1; }
report="$(promtool check metrics < "$tmp/metrics.txt" 2>&1)"
rc=$?
if [[ $rc -ne 0 || -n "$report" ]]; then
  echo "promtool check metrics reported (exit $rc):"
  echo "$report"
  exit 1
fi
echo "promtool check metrics: clean ($(grep -c '^# HELP' "$tmp/metrics.txt") metric families)"
