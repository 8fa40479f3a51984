#!/usr/bin/env bash
# The command lines of tcm-bench, tcm-client, tcm-mixed-load, tcm-eval and
# tcm-model-bench: flags out of range, contradictory or swallowed as values and
# stray arguments are refused with one line (exit 2) before any work, and a
# --json report is written whole once the run is over, or not at all: a run
# that fails leaves an earlier report as it was. tcm-bench's reports are checked
# against a real tcm-server on the embedded models. Nothing depends on speed.
#   client_tools_cli_test.sh SOURCE_DIR BIN_DIR
set -uo pipefail
source_dir="$(cd "$1" && pwd)"; bin="$(cd "$2" && pwd)"
source "$(dirname "$0")/server_lib.sh"
source "$(dirname "$0")/cli_expect.sh"
# Files a tool writes by mistake land where they are seen and removed.
cd "$TMP" || exit 1
# unchanged FILE DESCRIPTION: FILE still holds the earlier report and nothing
# else was left beside it.
unchanged() {
  local file="$1" what="$2"
  check '[[ "$(cat "$file")" == "earlier report" ]]' "$what changed $file: $(head -c 200 "$file")"
  check '[[ "$(ls -A "$(dirname "$file")")" == "$(basename "$file")" ]]' \
    "$what left files beside $file: $(ls -A "$(dirname "$file")")"
}
# Loops below go over GIVEN=PRINTED: a flag's value, then that number as the
# errors print it (1e13 as 1e+13).
# Nothing listens on port 1 of the loopback interface: a connection fails at once.
nowhere=127.0.0.1:1
config="$source_dir/tools/configs/edm2-fashion-mnist.pbtxt"
classifier="$source_dir/tools/eval/fashion-mnist-classifier.safetensors"
mkdir "$TMP/reports"
report="$TMP/reports/report.json"
earlier() { echo "earlier report" > "$report"; }

# --json: a path that cannot take the report is refused before any work, and
# the file is left alone.
for tool in tcm-bench tcm-model-bench tcm-eval; do
  case "$tool" in
    tcm-bench) args=(--server "$nowhere" --connect_timeout 0.5) ;;
    tcm-model-bench) args=(--config "$config") ;;
    tcm-eval) args=(--floor --classifier "$classifier") ;;
  esac
  expect_error 2 "--json: cannot write $TMP/absent/r.json: its directory $TMP/absent does not exist" \
    "$bin/$tool" "${args[@]}" --json "$TMP/absent/r.json"
  expect_error 2 "--json: cannot write $TMP/reports: it is a directory" "$bin/$tool" "${args[@]}" --json "$TMP/reports"
  expect_error 2 "--json: cannot write /dev/null: it is not a regular file" "$bin/$tool" "${args[@]}" --json /dev/null
  earlier
  expect_error 2 "--json: cannot write $report/r.json: $report is not a directory" \
    "$bin/$tool" "${args[@]}" --json "$report/r.json"
  unchanged "$report" "$tool with a bad --json"
done
# A run that fails leaves an earlier report as it was.
earlier
expect_error 1 "cannot connect to $nowhere" \
  "$bin/tcm-bench" --server "$nowhere" --connect_timeout 0.5 --concurrency 1 --json "$report"
unchanged "$report" "tcm-bench that cannot connect"
expect_error 2 "$TMP/absent/config.pbtxt" "$bin/tcm-model-bench" --model_dir "$TMP/absent" --json "$report"
unchanged "$report" "tcm-model-bench without a model"
expect_error 2 "--model: $TMP/absent/config.pbtxt" \
  "$bin/tcm-eval" --model "$TMP/absent" --classifier "$classifier" --json "$report"
unchanged "$report" "tcm-eval without a model"

# tcm-bench takes no flag as the value of another.
expect_error 2 "--json: needs a value; got the flag --raw (write --json=--raw for such a name)" \
  "$bin/tcm-bench" --server "$nowhere" --json --raw
expect_error 2 "--timeout: needs a value; got the flag --raw" "$bin/tcm-bench" --server "$nowhere" --timeout --raw
expect_error 2 "--json: needs a value" "$bin/tcm-bench" --server "$nowhere" --json
check '[[ -z "$(ls -A "$TMP" | grep -- "--")" ]]' "tcm-bench wrote a file named after a flag: $(ls -A "$TMP")"
# Times it turns into a deadline are bounded, NaN included; rates too.
for t in 1e13=1e+13 0=0 -1=-1 nan=nan inf=inf; do
  expect_error 2 "--timeout: must be a number of seconds in (0, 86400], got ${t#*=}" \
    "$bin/tcm-bench" --server "$nowhere" --timeout "${t%%=*}"
done
for t in 1e16=1e+16 0=0 nan=nan; do
  expect_error 2 "--connect_timeout: must be a number of seconds in (0, 86400], got ${t#*=}" \
    "$bin/tcm-bench" --server "$nowhere" --connect_timeout "${t%%=*}"
done
expect_error 2 "--rates: each rate must be at most 100000 requests per second, got 1e+12" \
  "$bin/tcm-bench" --server "$nowhere" --rates 5,1e12 --duration 0.1 --warmup 0 --max_inflight 1
expect_error 2 "unexpected argument 'stray'" "$bin/tcm-bench" --server "$nowhere" stray

# tcm-client (whose command-line errors exit 1, as its others do): one command at a time, and the
# health-check flags only with --health.
expect_error 1 "give at most one of --health, --list_models, --load_model, --unload_model; got --list_models, --load_model, --unload_model" \
  "$bin/tcm-client" --server "$nowhere" --list_models --load_model x --unload_model y
expect_error 1 "give at most one of --health, --list_models, --load_model, --unload_model; got --health, --list_models" \
  "$bin/tcm-client" --server "$nowhere" --health --list-models
expect_error 1 "--health_every: applies only with --health, got --health_every 0.5 without it" \
  "$bin/tcm-client" --server "$nowhere" --health_every 0.5 --out "$TMP/images"
expect_error 1 "--health_checks: applies only with --health and --health_every, got --health_checks 5 without --health" \
  "$bin/tcm-client" --server "$nowhere" --health_checks 5 --out "$TMP/images"
expect_error 1 "--health_checks: applies only with --health_every (a period between checks), got --health_checks 5" \
  "$bin/tcm-client" --server "$nowhere" --health --health_checks 5
check '[[ ! -e "$TMP/images" ]]' "tcm-client generated images for a health-check flag"

# tcm-mixed-load's times.
for t in -1=-1 0=0 nan=nan 1e300=1e+300; do
  expect_error 2 "--connect_timeout: must be a number of seconds in (0, 86400], got ${t#*=}" \
    "$bin/tcm-mixed-load" --server "$nowhere" --connect_timeout "${t%%=*}"
done
expect_error 2 "--progress_every: must be a number of seconds in [0, 86400] (0 = no progress lines), got -5" \
  "$bin/tcm-mixed-load" --server "$nowhere" --progress_every -5
for n in 0 1048577 2147483647; do
  expect_error 2 "--max_images: must be in [1, 1048576] (the largest --max_images_per_request tcm-server takes), got $n" \
    "$bin/tcm-mixed-load" --server "$nowhere" --max_images "$n"
done
for t in inf=inf nan=nan 0=0 -3=-3 1e9=1e+09; do
  expect_error 2 "--seconds: must be a number of seconds in (0, 604800], got ${t#*=}" \
    "$bin/tcm-mixed-load" --server "$nowhere" --seconds "${t%%=*}"
done

# --threads below 0, and tcm-model-bench's --seconds.
expect_error 2 "--threads: must be in [0, 1024] (0 = one per core), got -3" "$bin/tcm-eval" --floor --threads -3
expect_error 2 "--threads: must be in [0, 1024] (0 = one per core), got -3" "$bin/tcm-model-bench" --config "$config" --threads -3
expect_error 2 "--threads: must be in [0, 1024] (0 = one per core), got 1025" "$bin/tcm-model-bench" --config "$config" --threads 1025
expect_error 2 "--threads: must be in [0, 1024] (0 = one per core), got -1" "$bin/tcm-parity" --io none.pt --model_dir none --threads -1
expect_error 2 "--threads: must be in [0, 1024] (0 = one per core), got 2147483647" "$bin/tcm-bench" --raw --model_dir none \
  --threads 2147483647
for t in -1=-1 nan=nan inf=inf 1e9=1e+09; do
  expect_error 2 "--seconds: must be a number of seconds in [0, 86400] (0 = the fewest timed calls), got ${t#*=}" \
    "$bin/tcm-model-bench" --config "$config" --seconds "${t%%=*}"
done

# Stray arguments (a value after a boolean flag, a missing '--').
expect_error 1 "tcm-client: unexpected argument 'stray' (flags are --name=value)" \
  "$bin/tcm-client" --server "$nowhere" --out "$TMP/images" stray
expect_error 1 "tcm-client: unexpected argument 'true' (flags are --name=value)" \
  "$bin/tcm-client" --server "$nowhere" --health true
expect_error 2 "tcm-mixed-load: unexpected argument 'stray' (flags are --name=value)" \
  "$bin/tcm-mixed-load" --server "$nowhere" stray
expect_error 2 "tcm-eval: unexpected argument 'stray' (flags are --name=value)" "$bin/tcm-eval" --floor stray
expect_error 2 "tcm-model-bench: unexpected argument 'stray' (flags are --name=value)" \
  "$bin/tcm-model-bench" --config "$config" stray

# tcm-model-bench replaces an earlier report whole.
earlier
out="$("$bin/tcm-model-bench" --config "$config" --batch_sizes 1 --seconds 0 --precision fp32 --conv_ceiling=false \
  --threads 1 --json "$report" 2>&1)" || { echo "FAIL: tcm-model-bench: $out"; fail=1; }
check 'jq -e ".rows | length == 1" "$report" > /dev/null' "tcm-model-bench's report: $(head -c 300 "$report")"
check '[[ $(ls -A "$TMP/reports") == report.json ]]' "tcm-model-bench left files beside its report: $(ls -A "$TMP/reports")"

# tcm-bench against a server.
start_server "$bin/tcm-server" "$source_dir/models" --default_model fashion-mnist-tcm --metrics_port -1
server="127.0.0.1:$GRPC_PORT"
# The highest rate with one call at a time: the level ends, and every arrival of
# the window (50000 at 100000/s for 0.5 s) is sent or dropped, none counted twice.
# Its one call may end after the window on a busy machine: it still served.
earlier
"$bin/tcm-bench" --server "$server" --rates 100000 --duration 0.5 --warmup 0 --max_inflight 1 --json "$report" \
  > "$TMP/rate.txt" 2>&1 || { echo "FAIL: tcm-bench --rates 100000: $(cat "$TMP/rate.txt")"; fail=1; }
check 'jq -e ".levels | length == 1 and (.[0] | .mode == \"rate\" and .sent >= 1
  and .sent + .dropped <= 50000 and .sent + .dropped >= 49990)" "$report" > /dev/null' \
  "tcm-bench --rates 100000's report: $(jq -c '.levels[0] | {sent, dropped}' "$report" 2>&1 || head -c 300 "$report")"
check '[[ $(ls -A "$TMP/reports") == report.json ]]' "tcm-bench left files beside its report: $(ls -A "$TMP/reports")"
# A level whose every call is refused (65 images, above the server's 64) is exit 1, its report written.
"$bin/tcm-bench" --server "$server" --concurrency 1 --duration 1 --warmup 0 --images_per_request 65 \
  --json "$TMP/refused.json" > "$TMP/refused.txt" 2>&1
rc=$?
check '[[ $rc -eq 1 ]] && grep -q "^tcm-bench: a level had no successful request (see the errors column)$" "$TMP/refused.txt" \
  && jq -e ".levels[0] | .latency_ms.count == 0 and (.errors.INVALID_ARGUMENT // 0) == .sent" "$TMP/refused.json" > /dev/null' \
  "tcm-bench whose every call is refused gave exit $rc and: $(cat "$TMP/refused.txt"; jq -c ".levels[0].errors" "$TMP/refused.json")"
# A report that cannot be written at the end (a file size limit of 0, as a
# full disk would) is an error line and exit 1, and the earlier one stays.
earlier
# (Its error line goes through a pipe: the limit would stop a file too.)
err="$(trap '' XFSZ; ulimit -f 0
  "$bin/tcm-bench" --server "$server" --concurrency 1 --duration 0.2 --warmup 0 --json "$report" 2>&1 > /dev/null)"
rc=$?
check '[[ $rc -eq 1 && "$err" == "tcm-bench: --json: $report: write failed: File too large" ]]' \
  "tcm-bench with a report it cannot write gave exit $rc and: $err"
unchanged "$report" "tcm-bench whose report could not be written"
exit $fail
