#!/usr/bin/env bash
# The CUDA path's check, for a machine with one NVIDIA GPU and a CUDA LibTorch
# (an NVIDIA PyTorch container such as Dockerfile.gpu's base). Run from the
# repository root:
#
#   bash scripts/gpu-check.sh
#   OUT=DIR LIBTORCH=DIR BUILD_DIR=DIR FIXTURES=DIR JOBS=N bash scripts/gpu-check.sh
#
#   OUT        results (default ./gpu-check-out): summary.txt, gpu-pass.tsv, JSON, logs/
#   LIBTORCH   a CUDA LibTorch to build against; default: the CMake prefix of
#              python3's torch (torch.utils.cmake_prefix_path)
#   BUILD_DIR  the CUDA build (default build-cuda); FIXTURES the reference
#              fixtures (default ../shared/fixtures/reference); JOBS build jobs
#
# Steps, each under its own timeout, each printing one line, PASS, FAIL or
# SKIP, with its log in OUT/logs/STEP.log:
#   env.*          the GPU, the LibTorch (CUDA, C++11 ABI), the build tools
#                  (installed with apt-get, as in Dockerfile.gpu, when missing
#                  and this runs as root)
#   configure      cmake -DTCM_WITH_CUDA=ON against that LibTorch
#   build          tcm-server, tcm-client, tcm-bench, tcm-parity,
#                  tcm-model-bench, tcm-init-model
#   parity.*       tcm-parity --device=cuda --channels_last on every reference
#                  fixture in fp32 (tolerance 1e-4), bf16 and fp16 (2e-2)
#   flops.*        FLOPs per image of the Fashion-MNIST network and the EDM2-S
#                  shape, from tcm-model-bench, which runs on the CPU only (it
#                  has no --device flag): it times nothing on the GPU
#   gpu-pass.*     the GPU's passes at batch 1, 16, 64 and 256 of both networks,
#                  through a --device=cuda server (graphs per bucket, pinned
#                  buffers): tcm-bench at concurrency 1 with B images per call,
#                  and the server's tcm_batch_compute_seconds and
#                  tcm_batch_size over the calls; also in OUT/gpu-pass.tsv
#   graphs-vs-eager, cpu-vs-cuda
#                  the same 2-step request to fp32 servers: CUDA graphs against
#                  eager CUDA passes (TCM_CUDA_GRAPHS=0), and against the CPU;
#                  pixels within 1 level
#   instances.count2  instance { count: 2 } gives two workers on the GPU, both busy
#   serve.tcm-bench   tcm-bench against a --device=cuda server (fp16, batches of 64)
# Exit 0 when no step failed.
# The step functions run through run_step (exported, in a fresh bash):
# shellcheck disable=SC2317
set -euo pipefail
# NVIDIA's PyTorch containers set this to let fp32 matrix products run in TF32;
# fp32 is checked as fp32 (tcm-server turns TF32 off too).
unset TORCH_ALLOW_TF32_CUBLAS_OVERRIDE

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/lib/local-server.sh
source "$ROOT/scripts/lib/local-server.sh"

OUT="${OUT:-./gpu-check-out}"
mkdir -p "$OUT/logs"
OUT="$(cd "$OUT" && pwd)"
BUILD_DIR="${BUILD_DIR:-build-cuda}"
[[ "$BUILD_DIR" = /* ]] || BUILD_DIR="$ROOT/$BUILD_DIR"
BIN="$BUILD_DIR/bin"
FIXTURES="${FIXTURES:-$ROOT/../shared/fixtures/reference}"
JOBS="${JOBS:-$(nproc)}"
WORK="$(mktemp -d)"
: > "$WORK/pids"
: > "$OUT/summary.txt"
export ROOT OUT BUILD_DIR BIN FIXTURES JOBS WORK

# Kills the servers the steps started (by the pids they recorded).
kill_started() {
  local pid
  while read -r pid; do
    if [[ -n "$pid" ]]; then kill -9 "$pid" 2> /dev/null || true; fi
  done < "$WORK/pids"
  : > "$WORK/pids"
}
cleanup() {
  kill_started
  rm -rf "$WORK"
}
trap cleanup EXIT

result() {  # result PASS|FAIL|SKIP NAME DETAIL
  printf '%-4s %-36s %s\n' "$1" "$2" "$3" | tee -a "$OUT/summary.txt"
}

# run_step NAME TIMEOUT_S FUNCTION [ARGS...]: runs FUNCTION in a fresh bash
# under a timeout; its last line on fd 3 (the file $WORK/detail) is the detail.
run_step() {
  local name="$1" limit="$2" rc=0 detail
  shift 2
  : > "$WORK/detail"
  # shellcheck disable=SC2016  # expanded by the inner bash
  timeout --kill-after=10 "$limit" bash -euo pipefail -c '"$@" 3>> "$WORK/detail"' _ "$@" \
    > "$OUT/logs/$name.log" 2>&1 || rc=$?
  kill_started
  detail="$(tail -n 1 "$WORK/detail")"
  if [[ $rc -eq 0 ]]; then
    result PASS "$name" "$detail"
  elif [[ $rc -eq 124 || $rc -eq 137 ]]; then
    result FAIL "$name" "timed out after ${limit} s; ${detail:-see logs/$name.log}"
  else
    result FAIL "$name" "${detail:-exit $rc}; see logs/$name.log"
  fi
  return "$rc"
}
say() { echo "$*" >&3; }  # a step's detail line

# start_server NAME REPO [FLAGS...]: a tcm-server on free loopback ports, up to
# SERVING; sets PORT, METRICS_PORT, HTTP_PORT and SERVER_PID. GRAPHS=0 in the
# caller's environment runs it with TCM_CUDA_GRAPHS=0.
start_server() {
  local name="$1" repo="$2"
  shift 2
  PORT="$(tcm_free_port)"
  METRICS_PORT="$(tcm_free_port)"
  HTTP_PORT="$(tcm_free_port)"
  TCM_CUDA_GRAPHS="${GRAPHS:-1}" "$BIN/tcm-server" --model_repository "$repo" --port "$PORT" \
    --metrics_port "$METRICS_PORT" --http_port "$HTTP_PORT" --http_address 127.0.0.1 "$@" \
    > "$OUT/logs/server-$name.log" 2>&1 &
  SERVER_PID=$!
  echo "$SERVER_PID" >> "$WORK/pids"
  if ! tcm_wait_serving "$BIN" "$PORT" "$SERVER_PID"; then
    say "server $name did not reach SERVING: $(tail -n 2 "$OUT/logs/server-$name.log" | tr '\n' ' ')"
    return 1
  fi
}
stop_server() {
  kill -TERM "$SERVER_PID" 2> /dev/null || true
  wait "$SERVER_PID" 2> /dev/null || true
  sed -i "/^$SERVER_PID\$/d" "$WORK/pids"
}
# metric_sum NAME: the sum of NAME's samples over every label set.
metric_sum() {
  curl -fsS "127.0.0.1:$METRICS_PORT/metrics" |
    awk -v n="$1" '$1 == n || index($1, n "{") == 1 {s += $NF} END {printf "%.9g\n", s + 0}'
}
# json_get FILE EXPR: a value of a JSON file, EXPR in Python over `j`.
json_get() { python3 -c 'import json, sys; j = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"; }

step_env_gpu() {
  command -v nvidia-smi > /dev/null || { say "no nvidia-smi: no NVIDIA driver here"; return 1; }
  nvidia-smi
  local gpus
  gpus="$(nvidia-smi -L | grep -c '^GPU ' || true)"
  nvidia-smi -L > "$OUT/gpus.txt"
  [[ "$gpus" -ge 1 ]] || { say "no GPU listed by nvidia-smi -L"; return 1; }
  say "$gpus GPU(s): $(nvidia-smi -L | head -n 1)"
}

step_env_libtorch() {
  if [[ -n "${LIBTORCH:-}" ]]; then
    echo "$LIBTORCH" > "$WORK/prefix"
    say "LIBTORCH=$LIBTORCH (its C++ ABI must be the C++11 one; not checked here)"
    return 0
  fi
  local out
  if ! out="$(python3 - "$WORK/prefix" 2>&1 << 'EOF'
import sys, torch
open(sys.argv[1], "w").write(torch.utils.cmake_prefix_path + "\n")
print("torch", torch.__version__, "cuda", torch.version.cuda, "cuda available", torch.cuda.is_available(),
      "cxx11 abi", torch.compiled_with_cxx11_abi())
if not torch.cuda.is_available():
    sys.exit("python3's torch sees no CUDA device")
if not torch.compiled_with_cxx11_abi():
    sys.exit("python3's LibTorch uses the old C++ ABI; the distribution's gRPC needs the C++11 one")
EOF
  )"; then
    echo "$out"
    say "$(echo "$out" | tail -n 1) (or set LIBTORCH)"
    return 1
  fi
  echo "$out"
  say "python3 torch $(python3 -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)')"
}

step_env_tools() {
  local missing=() tool
  for tool in cmake pkg-config protoc grpc_cpp_plugin curl; do
    command -v "$tool" > /dev/null || missing+=("$tool")
  done
  if [[ ${#missing[@]} -gt 0 && "$(id -u)" -eq 0 ]] && command -v apt-get > /dev/null; then
    echo "missing: ${missing[*]}; installing Dockerfile.gpu's packages"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      cmake pkg-config libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler \
      libabsl-dev prometheus-cpp-dev nlohmann-json3-dev libpng-dev libmicrohttpd-dev libgnutls28-dev libgtest-dev \
      libgmock-dev curl
    missing=()
    for tool in cmake pkg-config protoc grpc_cpp_plugin curl; do
      command -v "$tool" > /dev/null || missing+=("$tool")
    done
  fi
  [[ ${#missing[@]} -eq 0 ]] || { say "missing: ${missing[*]} (install Dockerfile.gpu's packages)"; return 1; }
  say "cmake $(cmake --version | head -n 1 | awk '{print $3}'), protoc $(protoc --version | awk '{print $2}')"
}

step_configure() {
  local prefix
  prefix="$(cat "$WORK/prefix")"
  cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DTCM_WITH_CUDA=ON -DCMAKE_PREFIX_PATH="$prefix" \
    -DTCM_FIXTURES_DIR="$FIXTURES"
  say "$BUILD_DIR against $prefix"
}

step_build() {
  cmake --build "$BUILD_DIR" -j "$JOBS" --target tcm-server tcm-client tcm-bench tcm-parity tcm-model-bench \
    tcm-init-model
  # A linker that drops unused libraries can leave libtorch_cuda out: then no CUDA device is visible.
  local tool missing=()
  for tool in tcm-server tcm-parity; do
    [[ "$(ldd "$BIN/$tool")" == *libtorch_cuda* ]] || missing+=("$tool")
  done
  [[ ${#missing[@]} -eq 0 ]] || { say "built, but ${missing[*]} do not link libtorch_cuda"; return 1; }
  say "built with $JOBS jobs; tcm-server and tcm-parity link libtorch_cuda"
}

step_parity() {  # step_parity FIXTURE PRECISION
  local out
  out="$("$BIN/tcm-parity" --device cuda --channels_last --precision "$2" \
    --weights "$FIXTURES/$1.weights.safetensors" --io "$FIXTURES/$1.io.safetensors" 2>&1)" || {
    echo "$out"
    say "$(echo "$out" | grep -E 'FAIL|tcm-parity:' | tr -s ' ' | tr '\n' ' ')"
    return 1
  }
  echo "$out"
  say "$(echo "$out" | awk '/relative error/ {printf "%s %s  ", $1, $4}')($(echo "$out" | head -n 1))"
}

step_flops() {  # step_flops NAME MODEL_FLAG VALUE
  local out
  out="$("$BIN/tcm-model-bench" "$2" "$3" --batch_sizes 1 --seconds 0 --precision fp32 --conv_ceiling=false 2>&1)"
  echo "$out"
  local gflop
  gflop="$(echo "$out" | sed -n 's/.*, \([0-9.]*\) GFLOP per image.*/\1/p')"
  [[ -n "$gflop" ]] || { say "no 'GFLOP per image' line"; return 1; }
  echo "$gflop" > "$OUT/gflop-$1.txt"
  say "$gflop GFLOP per image (counted by tcm-model-bench on the CPU; it has no --device flag)"
}

step_init_edm2s() {
  rm -rf "$WORK/repo-edm2s"
  "$BIN/tcm-init-model" --config "$ROOT/tools/configs/edm2-s-img64.pbtxt" --output "$WORK/repo-edm2s/edm2-s"
  say "random EDM2-S weights: $(du -sh "$WORK/repo-edm2s/edm2-s" | cut -f1)"
}

# step_gpu_pass NAME REPO MODEL GFLOP B...: one --device=cuda server; per batch
# size B an untimed call of B images (which captures B's graph if needed), then
# tcm-bench at concurrency 1 with B images per call, and the server's pass
# metrics over exactly those calls.
step_gpu_pass() {
  local name="$1" repo="$2" model="$3" gflop="$4"
  shift 4
  start_server "gpu-pass-$name" "$repo" --device cuda --default_model "$model" --max_batch_size 256 \
    --max_images_per_request 256 --max_queue_size 1024 --warmup_batch_size 256
  local b failed=0 line summary=""
  for b in "$@"; do
    "$BIN/tcm-client" --server "127.0.0.1:$PORT" --num "$b" --steps 1 --seed 1 --out "$WORK/warm" > /dev/null
    local s0 c0 r0 s1 c1 r1
    s0="$(metric_sum tcm_batch_compute_seconds_sum)"
    c0="$(metric_sum tcm_batch_compute_seconds_count)"
    r0="$(metric_sum tcm_batch_size_sum)"
    "$BIN/tcm-bench" --server "127.0.0.1:$PORT" --concurrency 1 --images_per_request "$b" --two_step_fraction 0 \
      --duration 5 --warmup 1 --format raw --json "$OUT/gpu-pass-$name-b$b.json"
    s1="$(metric_sum tcm_batch_compute_seconds_sum)"
    c1="$(metric_sum tcm_batch_compute_seconds_count)"
    r1="$(metric_sum tcm_batch_size_sum)"
    line="$(python3 - "$name" "$b" "$gflop" "$s0" "$s1" "$c0" "$c1" "$r0" "$r1" "$OUT/gpu-pass-$name-b$b.json" << 'EOF'
import json, sys
name, b, gflop = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s0, s1, c0, c1, r0, r1 = map(float, sys.argv[4:10])
level = json.load(open(sys.argv[10]))["levels"][0]
passes, rows = c1 - c0, r1 - r0
ok = passes > 0 and level["error_count"] == 0 and abs(rows / passes - b) < 1e-6
ms = 1e3 * (s1 - s0) / passes if passes else float("nan")
per_s = b / ms * 1e3 if passes else float("nan")
print("\t".join([name, str(b), "%.0f" % passes, "%.2f" % (rows / passes if passes else 0), "%.3f" % ms, "%.1f" % per_s,
                 "%.2f" % (gflop * per_s / 1e3), "%.1f" % level["images_per_s"], "%d" % level["error_count"],
                 "ok" if ok else "FAIL"]))
EOF
)"
    echo "$line" >> "$OUT/gpu-pass.tsv"
    echo "$line"
    [[ "$line" == *$'\t'ok ]] || failed=1
    summary+="b$b $(echo "$line" | awk -F'\t' '{printf "%s ms %s img/s %s TFLOP/s", $5, $6, $7}'); "
  done
  stop_server
  say "${summary% }"
  return "$failed"
}

# infer PORT FILE: the same 2-step request of 16 Fashion-MNIST images (seed 7) through REST.
infer() {
  curl -fsS "127.0.0.1:$1/v2/models/fashion-mnist-tcm/infer" -d \
    '{"parameters": {"steps": 2, "seed": 7}, "inputs": [{"name": "class_label", "datatype": "INT64", "shape": [16],
      "data": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 5]}]}' > "$2"
}
# max_diff A B: the largest pixel difference between two infer answers.
max_diff() {
  python3 - "$1" "$2" << 'EOF'
import json, sys
a, b = (json.load(open(p))["outputs"][0] for p in sys.argv[1:3])
assert a["shape"] == b["shape"], (a["shape"], b["shape"])
print(max(abs(x - y) for x, y in zip(a["data"], b["data"])))
EOF
}

step_graphs_vs_eager() {
  start_server graphs "$WORK/repo-fmnist" --device cuda --precision fp32
  infer "$HTTP_PORT" "$OUT/infer-cuda-graphs.json"
  stop_server
  GRAPHS=0 start_server eager "$WORK/repo-fmnist" --device cuda --precision fp32
  infer "$HTTP_PORT" "$OUT/infer-cuda-eager.json"
  stop_server
  local d
  d="$(max_diff "$OUT/infer-cuda-graphs.json" "$OUT/infer-cuda-eager.json")"
  say "fp32, 16 images, 2 steps: largest pixel difference $d (limit 1)"
  [[ "$d" -le 1 ]]
}

step_cpu_vs_cuda() {
  start_server cpu "$WORK/repo-fmnist" --device cpu --precision fp32 --workers 1
  infer "$HTTP_PORT" "$OUT/infer-cpu.json"
  stop_server
  [[ -s "$OUT/infer-cuda-graphs.json" ]] || { say "no CUDA answer (graphs-vs-eager failed)"; return 1; }
  local d
  d="$(max_diff "$OUT/infer-cpu.json" "$OUT/infer-cuda-graphs.json")"
  say "fp32, 16 images, 2 steps, CPU against CUDA graphs: largest pixel difference $d (limit 1)"
  [[ "$d" -le 1 ]]
}

step_instances() {
  rm -rf "$WORK/repo-count2"
  mkdir -p "$WORK/repo-count2"
  cp -r "$ROOT/models/fashion-mnist-tcm" "$WORK/repo-count2/"
  printf '\ninstance { count: 2 }\n' >> "$WORK/repo-count2/fashion-mnist-tcm/config.pbtxt"
  start_server count2 "$WORK/repo-count2" --device cuda
  "$BIN/tcm-bench" --server "127.0.0.1:$PORT" --concurrency 8 --images_per_request 4 --duration 5 --warmup 1 \
    --json "$OUT/instances-count2.json"
  local busy0 busy1 busy2 errors
  busy0="$(metric_sum 'tcm_worker_busy_seconds_total{worker="0"}')"
  busy1="$(metric_sum 'tcm_worker_busy_seconds_total{worker="1"}')"
  busy2="$(metric_sum 'tcm_worker_busy_seconds_total{worker="2"}')"
  errors="$(json_get "$OUT/instances-count2.json" 'j["levels"][0]["error_count"]')"
  stop_server
  say "worker busy seconds: 0: $busy0, 1: $busy1, 2 (must not exist): $busy2; $errors errors"
  awk -v a="$busy0" -v b="$busy1" -v c="$busy2" -v e="$errors" 'BEGIN {exit !(a > 0 && b > 0 && c == 0 && e == 0)}'
}

step_serve() {
  start_server serve "$ROOT/models" --device cuda --default_model fashion-mnist-tcm --max_batch_size 64 \
    --max_queue_size 512
  "$BIN/tcm-bench" --server "127.0.0.1:$PORT" --concurrency 1,8,32 --images_per_request 4 --two_step_fraction 0.5 \
    --duration 5 --warmup 2 --json "$OUT/serve-tcm-bench.json"
  curl -fsS "127.0.0.1:$METRICS_PORT/metrics" > "$OUT/serve-metrics.txt"
  stop_server
  say "$(json_get "$OUT/serve-tcm-bench.json" \
    '"; ".join("c%d %.1f img/s p50 %.1f ms, %d errors" % (l["concurrency"], l["images_per_s"], l["latency_ms"]["p50"], l["error_count"]) for l in j["levels"])')"
  [[ "$(json_get "$OUT/serve-tcm-bench.json" 'sum(l["error_count"] for l in j["levels"])')" -eq 0 ]]
}

export -f kill_started say start_server stop_server metric_sum json_get tcm_free_port tcm_wait_serving infer max_diff
export -f step_env_gpu step_env_libtorch step_env_tools step_configure step_build step_parity step_flops
export -f step_init_edm2s step_gpu_pass step_graphs_vs_eager step_cpu_vs_cuda step_instances step_serve

{
  echo "commit $(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  uname -a
} > "$OUT/env.txt"
printf 'model\tbatch\tpasses\trows_per_pass\tms_per_pass\timages_per_s_in_pass\tTFLOP_per_s\tserved_images_per_s\terrors\tcheck\n' \
  > "$OUT/gpu-pass.tsv"

failed=0
built=1
run_step env.gpu 30 step_env_gpu || failed=1
run_step env.libtorch 60 step_env_libtorch || { failed=1; built=0; }
run_step env.tools 300 step_env_tools || { failed=1; built=0; }
if [[ $built -eq 1 ]]; then
  run_step configure 180 step_configure || { failed=1; built=0; }
fi
if [[ $built -eq 1 ]]; then
  run_step build 540 step_build || { failed=1; [[ -x "$BIN/tcm-server" ]] || built=0; }
fi
if [[ $built -eq 0 ]]; then
  result FAIL "(the rest)" "not run: nothing was built"
  exit 1
fi

shopt -s nullglob
fixtures=("$FIXTURES"/*.weights.safetensors)
[[ ${#fixtures[@]} -gt 0 ]] || { result FAIL parity "no fixtures in $FIXTURES"; failed=1; }
for weights in "${fixtures[@]}"; do
  fixture="$(basename "$weights" .weights.safetensors)"
  for precision in fp32 bf16 fp16; do
    run_step "parity.$fixture.$precision" 90 step_parity "$fixture" "$precision" || failed=1
  done
done

result SKIP model-bench.gpu "tcm-model-bench has no --device flag; the GPU's passes are timed through the server (gpu-pass.*)"
run_step flops.fashion-mnist 60 step_flops fashion-mnist --model_dir "$ROOT/models/fashion-mnist-tcm" || failed=1
run_step flops.edm2-s 120 step_flops edm2-s --config "$ROOT/tools/configs/edm2-s-img64.pbtxt" || failed=1
FMNIST_GFLOP="$(cat "$OUT/gflop-fashion-mnist.txt" 2> /dev/null || echo 0.602)"
EDM2S_GFLOP="$(cat "$OUT/gflop-edm2-s.txt" 2> /dev/null || echo 201.607)"

mkdir -p "$WORK/repo-fmnist"
cp -r "$ROOT/models/fashion-mnist-tcm" "$WORK/repo-fmnist/"
run_step gpu-pass.fashion-mnist 240 step_gpu_pass fashion-mnist "$WORK/repo-fmnist" fashion-mnist-tcm \
  "$FMNIST_GFLOP" 1 16 64 256 || failed=1
if run_step models.edm2-s 180 step_init_edm2s; then
  run_step gpu-pass.edm2-s 300 step_gpu_pass edm2-s "$WORK/repo-edm2s" edm2-s "$EDM2S_GFLOP" 1 16 64 256 || failed=1
  rm -rf "$WORK/repo-edm2s"
else
  failed=1
fi
run_step graphs-vs-eager 180 step_graphs_vs_eager || failed=1
run_step cpu-vs-cuda 180 step_cpu_vs_cuda || failed=1
run_step instances.count2 120 step_instances || failed=1
run_step serve.tcm-bench 180 step_serve || failed=1

if [[ $failed -eq 0 ]]; then
  result PASS gpu-check "every step passed; results in $OUT"
else
  result FAIL gpu-check "some step failed; results in $OUT"
fi
exit "$failed"
