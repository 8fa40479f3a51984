#!/usr/bin/env bash
# End to end: tcm-server with a model, a real Prometheus scraping it with the project's
# scrape configuration and alert rules (deploy/prometheus/, the Kubernetes discovery
# replaced by static targets carrying the same discovery labels: see prom_tools.py),
# traffic from tcm-client, then read back through Prometheus's HTTP API: the image count
# and images/s, every Grafana panel's query, the autoscaler's metrics, the rules' health.
set -uo pipefail
server="$1"; client="$2"; init_model="$3"
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
source "$here/../server_lib.sh"
PROM_PID=""
stop_all() {
  [[ -n "$PROM_PID" ]] && { kill "$PROM_PID" 2>/dev/null; wait "$PROM_PID" 2>/dev/null; }
  cleanup
}
trap stop_all EXIT

"$init_model" --config "$repo/tools/configs/edm2-fashion-mnist.pbtxt" --output "$TMP/repo/fashion" > /dev/null || exit 1
start_server "$server" "$TMP/repo" --metrics_port 0
target="127.0.0.1:$GRPC_PORT"

prom_port="$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
/usr/bin/python3 "$here/prom_tools.py" config --out "$TMP/prom" --interval 1s --drop-job kube-state-metrics \
  --target "127.0.0.1:$METRICS_PORT" --decoy "127.0.0.1:$GRPC_PORT" || exit 1
prometheus --config.file="$TMP/prom/prometheus.yml" --storage.tsdb.path="$TMP/prom/data" \
  --web.listen-address="127.0.0.1:$prom_port" --log.level=warn > "$TMP/prometheus.log" 2>&1 &
PROM_PID=$!
api="http://127.0.0.1:$prom_port"

# query EXPR: the first result's value, or nothing.
query() {
  curl -sf "$api/api/v1/query" --data-urlencode "query=$1" \
    | /usr/bin/python3 -c 'import json, sys; r = json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "")'
}
# wait_for EXPR VALUE: until the query gives VALUE (20 s at most).
wait_for() {
  for _ in $(seq 100); do [[ "$(query "$1" 2>/dev/null)" == "$2" ]] && return 0; sleep 0.2; done
  echo "timed out waiting for $1 == $2 (last: $(query "$1"))"; cat "$TMP/prometheus.log"; exit 1
}

wait_for 'sum(up{job="tcm-serve"})' 1
# The server creates the image and request series at 0 for every model and step
# count, so rate() and increase() see the very first image.
wait_for 'count(tcm_images_generated_total{job="tcm-serve"})' 2
wait_for 'sum(tcm_images_generated_total{job="tcm-serve"})' 0
since="$(date +%s.%N)"
sleep 1.5
sent=0
for call in "5 1" "3 2" "4 1"; do
  read -r num steps <<< "$call"
  "$client" --server "$target" --num "$num" --steps "$steps" --out "$TMP/out" > /dev/null || exit 1
  sent=$((sent + num))
done
"$client" --server "$target" --steps 5 > /dev/null 2>&1 && { echo "steps 5 was accepted"; exit 1; }
wait_for 'sum(tcm_images_generated_total{job="tcm-serve"})' "$sent"
wait_for 'sum(tcm_requests_total{job="tcm-serve", code="INVALID_ARGUMENT"})' 1
sleep 2  # a few more scrapes and rule evaluations

/usr/bin/python3 "$here/prom_tools.py" check --prom "$api" --images "$sent" --since "$since"
