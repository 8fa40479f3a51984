# Sourced by the scripts that run a tcm-server of this build on loopback
# (soak.sh, overload.sh). Each function states what it sets or prints.

# tcm_bin_dir BUILD_DIR: prints the absolute bin folder of BUILD_DIR (relative
# paths are taken from the repository root).
tcm_bin_dir() {
  local root bin
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
  bin="$1/bin"
  [[ "$bin" = /* ]] || bin="$root/$bin"
  echo "$bin"
}

# tcm_require_tools NAME BIN TOOL...: exits 2, naming NAME, when a tool is not built.
tcm_require_tools() {
  local name="$1" bin="$2" tool
  shift 2
  for tool in "$@"; do
    [[ -x "$bin/$tool" ]] || { echo "$name: $bin/$tool not found; run make build" >&2; exit 2; }
  done
}

# tcm_free_port: prints a TCP port free on 127.0.0.1 a moment ago.
tcm_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# tcm_wait_serving BIN PORT PID: returns 0 once the server on PORT answers
# health SERVING; 1 when process PID exits first or 300 s pass.
tcm_wait_serving() {
  local bin="$1" port="$2" pid="$3"
  for _ in $(seq 1 600); do
    "$bin/tcm-client" --server "127.0.0.1:$port" --health --timeout 2 > /dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.5
  done
  return 1
}
