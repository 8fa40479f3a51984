#!/usr/bin/env bash
# The metrics endpoint after real traffic passes `promtool check metrics`
# (Prometheus naming and help conventions) with nothing reported.
set -uo pipefail
server="$1"; client="$2"; convert="$3"; fixtures="$4"
tmp="$(mktemp -d)"
pid=""
cleanup() { [[ -n "$pid" ]] && kill -9 "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

"$convert" --input "$fixtures/ddpmpp_cond_tiny.weights.safetensors" --output "$tmp/repo/cond" > /dev/null || exit 1
"$server" --model_repository "$tmp/repo" --port 0 --metrics_port 0 > "$tmp/server.log" 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q "serving" "$tmp/server.log" && break; sleep 0.2; done
line="$(grep "serving" "$tmp/server.log")" || { echo "server did not start:"; cat "$tmp/server.log"; exit 1; }
grpc_port="$(sed -E 's/.* on port ([0-9]+) .*/\1/' <<< "$line")"
metrics_port="$(sed -E 's/.*metrics on port ([0-9]+).*/\1/' <<< "$line")"

"$client" --server "localhost:$grpc_port" --num 3 --steps 2 --out "$tmp/out" > /dev/null || exit 1
"$client" --server "localhost:$grpc_port" --steps 5 > /dev/null 2>&1 && { echo "steps 5 was accepted"; exit 1; }

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
