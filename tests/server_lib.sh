# Shared by the shell tests that run a real tcm-server. Source it, then call
# start_server. Sets TMP (removed on exit), SERVER_PID, GRPC_PORT, METRICS_PORT.
TMP="$(mktemp -d)"
SERVER_PID=""
cleanup() { [[ -n "$SERVER_PID" ]] && kill -9 "$SERVER_PID" 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT

# start_server SERVER_BIN REPOSITORY [FLAGS...]: starts the server on free
# ports and waits until it serves (it prints its ports then).
start_server() {
  local bin="$1" repo="$2"
  shift 2
  "$bin" --model_repository "$repo" --port 0 --http_port 0 "$@" > "$TMP/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 150); do grep -q "serving" "$TMP/server.log" && break; sleep 0.2; done
  local line
  line="$(grep "serving" "$TMP/server.log")" || { echo "server did not start:"; cat "$TMP/server.log"; exit 1; }
  GRPC_PORT="$(sed -E 's/.* on port ([0-9]+) .*/\1/' <<< "$line")"
  METRICS_PORT="$(sed -E 's/.*metrics on port ([0-9]+).*/\1/' <<< "$line")"
  HTTP_PORT="$(sed -E 's/.*http on port ([0-9]+).*/\1/' <<< "$line")"
}
