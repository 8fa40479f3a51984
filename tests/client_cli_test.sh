#!/usr/bin/env bash
# tcm-client and tcm-bench end to end against a real tcm-server serving the
# embedded models: what they print, the files they write, their JSON, and their
# one-line errors. tcm-server's own flag checks run first (no model loads).
#   client_cli_test.sh SOURCE_DIR BIN_DIR
set -uo pipefail
source_dir="$1"; bin="$2"
source "$(dirname "$0")/server_lib.sh"
source "$(dirname "$0")/cli_expect.sh"

# tcm-server refuses numeric flags out of range before loading anything.
expect_error 1 "--max_images_per_request: must be in [1, 1048576], got 0" \
  "$bin/tcm-server" --model_repository "$source_dir/models" --max_images_per_request 0
expect_error 1 "--max_queue_size: must be at least 1, got -5" \
  "$bin/tcm-server" --model_repository "$source_dir/models" --max_queue_size -5
expect_error 1 "--model_control: must be none, poll or explicit, got sometimes" \
  "$bin/tcm-server" --model_repository "$source_dir/models" --model_control sometimes
expect_error 1 "--drain_timeout: must be at least 0, got -1" \
  "$bin/tcm-server" --model_repository "$source_dir/models" --drain_timeout -1
expect_error 1 "--metrics_port: must be in [-1, 65535], got 70000" \
  "$bin/tcm-server" --model_repository "$source_dir/models" --metrics_port 70000
expect_error 1 "--max_open_calls: must be in [0, 16777216], got -1" \
  "$bin/tcm-server" --model_repository "$source_dir/models" --max_open_calls -1
expect_error 1 "--port: must be in [0, 65535], got -5" \
  "$bin/tcm-server" --model_repository "$source_dir/models" --port -5
# A stray word is refused, not ignored (here it would have served the default folder).
expect_error 1 "tcm-server: unexpected argument 'mymodels' (flags are --name=value)" \
  timeout 60 "$bin/tcm-server" mymodels --model_repository "$source_dir/models" --port 0 --metrics_port -1 --http_port -1
# tcm-client refuses bad flags with one line naming the flag, before any call.
expect_error 1 "--num: must be at least 1, got 0" "$bin/tcm-client" --server 127.0.0.1:1 --num 0
expect_error 1 "--steps: must be 1 or 2, or 0 for the model's default, got -1" \
  "$bin/tcm-client" --server 127.0.0.1:1 --steps -1
expect_error 1 "--priority: must be at least 0 (0 = the model's default level), got -2" \
  "$bin/tcm-client" --server 127.0.0.1:1 --priority -2
expect_error 1 "--health_every: must be a number of seconds in [0, 86400], got -1" \
  "$bin/tcm-client" --server 127.0.0.1:1 --health --health_every -1
expect_error 1 "--health_every: must be a number of seconds in [0, 86400], got 1e+300" \
  "$bin/tcm-client" --server 127.0.0.1:1 --health --health_every 1e300
for t in nan inf 0 -1; do
  expect_error 1 "--timeout: must be a number of seconds in (0, 86400], got $t" \
    "$bin/tcm-client" --server 127.0.0.1:1 --timeout "$t"
done
expect_error 1 "--class: must be a class of the model (0 or more), or -1 for a random class per image, got -5" \
  "$bin/tcm-client" --server 127.0.0.1:1 --class -5
expect_error 1 "--seed: must be 0 or more, or -1 for the server's choice, got -7" \
  "$bin/tcm-client" --server 127.0.0.1:1 --seed -7
# --server: HOST:PORT with a port gRPC would not wrap, or a gRPC target; one line, no gRPC log.
server_error="--server: expected HOST:PORT with PORT in 1-65535 (or a gRPC target such as dns:///HOST:PORT or unix:PATH)"
expect_error 1 "$server_error, got '127.0.0.1:99999'" "$bin/tcm-client" --server 127.0.0.1:99999 --health
expect_error 1 "$server_error, got ''" "$bin/tcm-client" --server '' --health
# The load tools bound their client threads.
expect_error 2 "--concurrency: each level must be at most 4096, got 5000" \
  "$bin/tcm-bench" --server 127.0.0.1:1 --concurrency 1,5000
expect_error 2 "--callers: must be in [1, 4096], got 5000" "$bin/tcm-mixed-load" --server 127.0.0.1:1 --callers 5000
expect_error 2 "--calls_per_caller: must be 0 (run for --seconds) or more, got -1" \
  "$bin/tcm-mixed-load" --server 127.0.0.1:1 --calls_per_caller -1
# An unknown --default_model names the models there are.
expect_error 1 "--default_model: no model named 'nosuch' (available: fashion-mnist-ct, fashion-mnist-tcm)" \
  "$bin/tcm-server" --model_repository "$source_dir/models" --default_model nosuch --port 0 --metrics_port -1 --http_port -1

start_server "$bin/tcm-server" "$source_dir/models" --default_model fashion-mnist-tcm --metrics_port -1
server="127.0.0.1:$GRPC_PORT"

# --list-models: one line per model, then its class names.
"$bin/tcm-client" --server "$server" --list-models > "$TMP/list.txt" 2>&1 || { echo "FAIL: --list-models"; fail=1; }
check 'grep -Eq "^fashion-mnist-tcm.*: version 1, EDM2UNet 32x32x1, 10 classes, default 1 step\(s\), mid_t 10.000$" "$TMP/list.txt"' \
  "--list-models describes the default model: $(cat "$TMP/list.txt")"
check 'grep -Eq "^fashion-mnist-ct.*: version 1, EDM2UNet 32x32x1, 10 classes" "$TMP/list.txt"' "--list-models lists the stage-1 model"
check 'grep -q "^  classes: T-shirt/top, Trouser, Pullover, Dress, Coat, Sandal, Shirt, Sneaker, Bag, Ankle boot$" "$TMP/list.txt"' \
  "--list-models prints the class names"
# --load_model on a server without explicit model control: one line naming the mode.
expect_error 1 "FAILED_PRECONDITION: LoadModel: the server runs with --model_control=none" \
  "$bin/tcm-client" --server "$server" --load_model fashion-mnist-ct

# A gRPC caller other than gRPC's C core (which caps the grpc-timeout it sends
# far below this) may send centuries: a Go or Java caller asking for the
# longest timeout its language has sends 292 years.
# A deadline past the year 2262 is no deadline, not one already passed.
printf 'model: "fashion-mnist-tcm" class_label: 3 seed: 1' |
  protoc --encode=tcm.v1.GenerateRequest -I "$source_dir/proto" tcm/v1/tcm_service.proto > "$TMP/request.pb"
python3 -c 'import struct, sys; d = open(sys.argv[1], "rb").read(); sys.stdout.buffer.write(b"\0" + struct.pack(">I", len(d)) + d)' \
  "$TMP/request.pb" > "$TMP/request.grpc"
for timeout in 2100000H 99999999H; do
  curl -sS -v --http2-prior-knowledge -X POST -H 'content-type: application/grpc' -H 'te: trailers' \
    -H "grpc-timeout: $timeout" --data-binary @"$TMP/request.grpc" -o "$TMP/response.grpc" \
    "http://$server/tcm.v1.TcmService/Generate" > "$TMP/curl.txt" 2>&1
  check 'grep -q "^< grpc-status: 0" "$TMP/curl.txt" && [[ $(stat -c %s "$TMP/response.grpc") -gt 100 ]]' \
    "a Generate with grpc-timeout $timeout is answered with its image: $(grep -i '^< grpc-' "$TMP/curl.txt")"
done

# --health, once and repeated on one connection ("STATUS MILLISECONDS" per check).
"$bin/tcm-client" --server "$server" --health > "$TMP/health.txt" 2>&1 || { echo "FAIL: --health"; fail=1; }
check '[[ "$(cat "$TMP/health.txt")" == SERVING ]]' "--health prints SERVING: $(cat "$TMP/health.txt")"
"$bin/tcm-client" --server "$server" --health --health_every 0.05 --health_checks 3 > "$TMP/health3.txt" 2>&1 ||
  { echo "FAIL: --health_every: $(cat "$TMP/health3.txt")"; fail=1; }
check '[[ $(grep -cE "^SERVING [0-9]+\.[0-9]{2}$" "$TMP/health3.txt") -eq 3 && $(wc -l < "$TMP/health3.txt") -eq 3 ]]' \
  "--health_every prints three timed SERVING lines: $(cat "$TMP/health3.txt")"
"$bin/tcm-client" --server "$server" --health --model nosuch --health_every 0.05 --health_checks 2 \
  > "$TMP/health_bad.txt" 2>&1 && { echo "FAIL: --health_every on an unknown model exited 0"; fail=1; }
check '[[ $(grep -cE "^NOT_FOUND [0-9.]+$" "$TMP/health_bad.txt") -eq 2 ]]' \
  "--health_every names the error per check: $(cat "$TMP/health_bad.txt")"

# Images: one PNG per image, the files and the server time printed.
"$bin/tcm-client" --server "$server" --model fashion-mnist-ct --class 3 --steps 2 --num 5 --seed 7 --out "$TMP/each" \
  > "$TMP/each.txt" 2>&1 || { echo "FAIL: generate: $(cat "$TMP/each.txt")"; fail=1; }
check '[[ $(grep -c "^wrote $TMP/each/.*\.png$" "$TMP/each.txt") -eq 5 ]]' "five 'wrote' lines: $(cat "$TMP/each.txt")"
check 'grep -Eq "^model fashion-mnist-ct, 2 step\(s\), seed 7: server time [0-9.]+ ms \(queue [0-9.]+, compute [0-9.]+, encode [0-9.]+\)$" "$TMP/each.txt"' \
  "the server time line"
# --preview: the call streamed; each image's first-step result written too (_preview.png),
# byte-identical to the same call at 1 step; the finals to the same call without --preview
# (same batch sizes, so also at bf16, whose bytes may depend on the batch's size).
"$bin/tcm-client" --server "$server" --model fashion-mnist-ct --class 3 --steps 2 --num 2 --seed 7 --preview \
  --out "$TMP/preview" > "$TMP/preview.txt" 2>&1 || { echo "FAIL: --preview: $(cat "$TMP/preview.txt")"; fail=1; }
"$bin/tcm-client" --server "$server" --model fashion-mnist-ct --class 3 --steps 1 --num 2 --seed 7 \
  --out "$TMP/preview" > "$TMP/one_step.txt" 2>&1 || { echo "FAIL: 1 step: $(cat "$TMP/one_step.txt")"; fail=1; }
"$bin/tcm-client" --server "$server" --model fashion-mnist-ct --class 3 --steps 2 --num 2 --seed 7 \
  --out "$TMP/two_step" > "$TMP/two_step.txt" 2>&1 || { echo "FAIL: 2 steps: $(cat "$TMP/two_step.txt")"; fail=1; }
check 'grep -q "^model fashion-mnist-ct, 2 step(s), seed 7: 2 image(s) and 2 preview(s) streamed$" "$TMP/preview.txt"' \
  "--preview's summary line: $(cat "$TMP/preview.txt")"
for i in 0 1; do
  check 'cmp -s "$TMP/preview/fashion-mnist-ct_s7_2step_c3_${i}_preview.png" "$TMP/preview/fashion-mnist-ct_s7_1step_c3_${i}.png"' \
    "preview $i equals the 1-step image: $(ls "$TMP/preview")"
  check 'cmp -s "$TMP/preview/fashion-mnist-ct_s7_2step_c3_${i}.png" "$TMP/two_step/fashion-mnist-ct_s7_2step_c3_${i}.png"' \
    "final $i equals Generate's 2-step image"
done
# --grid: the same five images in one PNG, 3 columns by 2 rows.
"$bin/tcm-client" --server "$server" --model fashion-mnist-ct --class 3 --steps 2 --num 5 --seed 7 --grid --out "$TMP/grid" \
  > "$TMP/grid.txt" 2>&1 || { echo "FAIL: --grid: $(cat "$TMP/grid.txt")"; fail=1; }
check '[[ $(ls "$TMP/grid"/*.png | wc -l) -eq 1 ]]' "--grid writes one file"
/usr/bin/python3 - "$TMP/each" "$TMP/grid" << 'PY' || fail=1
import glob, sys
import numpy as np
from matplotlib import image
each = [image.imread(p) for p in sorted(glob.glob(sys.argv[1] + "/*.png"))]
grid = image.imread(glob.glob(sys.argv[2] + "/*.png")[0])
assert len(each) == 5 and all(e.shape == (32, 32) for e in each), [e.shape for e in each]
assert grid.shape == (64, 96), grid.shape
for i, e in enumerate(each):
    tile = grid[(i // 3) * 32:(i // 3 + 1) * 32, (i % 3) * 32:(i % 3 + 1) * 32]
    assert np.array_equal(tile, e), f"tile {i} differs from image {i}"
assert not grid[32:, 64:].any(), "the unused tile is not black"
assert len({e.tobytes() for e in each}) == 5, "the five images are not distinct"
PY

# Errors from the server: one line naming the field, non-zero exit.
# A write that fails (here a file size limit of 0, as a full disk would) is an
# error line and exit 1, and leaves no file, whole or partial, behind.
(trap '' XFSZ; ulimit -f 0; expect_error 1 ": write failed: File too large" \
  "$bin/tcm-client" --server "$server" --num 3 --seed 1 --out "$TMP/full"; exit $fail) || fail=1
check '[[ -d "$TMP/full" && -z "$(ls -A "$TMP/full")" ]]' "a failed write leaves nothing: $(ls -A "$TMP/full")"
(trap '' XFSZ; ulimit -f 0; expect_error 1 ": write failed: File too large" \
  "$bin/tcm-client" --server "$server" --num 3 --seed 1 --grid --out "$TMP/full"; exit $fail) || fail=1
check '[[ -z "$(ls -A "$TMP/full")" ]]' "a failed grid write leaves nothing: $(ls -A "$TMP/full")"
expect_error 1 "steps: must be 1 or 2" "$bin/tcm-client" --server "$server" --steps 3 --out "$TMP/x"
expect_error 1 "model: 'nope' is not served" "$bin/tcm-client" --server "$server" --model nope --out "$TMP/x"
expect_error 1 "class_label: must be in [0, 10)" "$bin/tcm-client" --server "$server" --class 10 --out "$TMP/x"

# tcm-bench: a closed-loop sweep and an open-loop rate, table and JSON.
"$bin/tcm-bench" --server "$server" --concurrency 1,2 --duration 2 --warmup 0.5 --two_step_fraction 0.5 \
  --json "$TMP/closed.json" > "$TMP/closed.txt" 2>&1 || { echo "FAIL: tcm-bench closed loop: $(cat "$TMP/closed.txt")"; fail=1; }
"$bin/tcm-bench" --server "$server" --rates 4 --duration 2 --warmup 0.5 --images_per_request 2 --two_step_fraction 0 \
  --json "$TMP/open.json" > "$TMP/open.txt" 2>&1 || { echo "FAIL: tcm-bench open loop: $(cat "$TMP/open.txt")"; fail=1; }
"$bin/tcm-bench" --raw --model_dir "$source_dir/models/fashion-mnist-ct" --batch_size 2 --raw_seconds 0.2 --threads 1 \
  --json "$TMP/raw.json" > "$TMP/raw.txt" 2>&1 || { echo "FAIL: tcm-bench --raw: $(cat "$TMP/raw.txt")"; fail=1; }
check 'grep -q "p99" "$TMP/closed.txt"' "the closed-loop table has a p99 column: $(cat "$TMP/closed.txt")"
/usr/bin/python3 - "$TMP/closed.json" "$TMP/open.json" "$TMP/raw.json" << 'PY' || fail=1
import json, sys
closed, opened, raw = (json.load(open(p)) for p in sys.argv[1:])
levels = closed["levels"]
assert [l["mode"] for l in levels] == ["concurrency"] * 2 and [l["concurrency"] for l in levels] == [1, 2], levels
for l in levels + opened["levels"]:
    assert l["ok"] > 0 and l["error_count"] == 0, l
    assert l["images_per_s"] > 0 and l["requests_per_s"] > 0, l
    lat = l["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"], lat
(o,) = opened["levels"]
assert o["mode"] == "rate" and o["images"] == 2 * o["ok"], o
assert abs(o["images_per_s"] - 2 * o["requests_per_s"]) < 1e-6, o
cases = raw["raw"]["cases"]
assert len(cases) >= 2 and all(c["batch_size"] == 2 and c["images_per_s"] > 0 for c in cases), cases
PY
exit $fail
