#!/usr/bin/env bash
# tcm-model-bench's outputs that other tools read: the --json report's shape
# and the --paired_ceiling line. Values are checked for presence and sign,
# never for speed.
set -uo pipefail
bench="$1"
config="$2"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
fail=0
check() {  # check DESCRIPTION -- command...: fails the test when the command fails
  local what="$1"
  shift 2
  if ! "$@" > /dev/null; then
    echo "FAIL: $what"
    fail=1
  fi
}

out="$("$bench" --config "$config" --batch_sizes 2 --seconds 0 --precision fp32 --paired_ceiling \
  --json "$tmp/bench.json" 2>&1)"
rc=$?
check "tcm-model-bench exited $rc: $out" -- test "$rc" -eq 0

report="$tmp/bench.json"
check "json: cpu.bf16_native is a boolean" -- jq -e '.cpu.bf16_native | type == "boolean"' "$report"
check "json: the matmul ceiling is positive" -- jq -e '.ceilings.matmul_fp32_gflops > 0' "$report"
check "json: four positive convolution ceilings" -- jq -e \
  '.ceilings.conv_gflops | (keys == ["bf16_channels_last", "bf16_nchw", "fp32_channels_last", "fp32_nchw"]) and all(.[]; . > 0)' \
  "$report"
check "json: one fp32 channels-last row of batch 2 with its figures" -- jq -e \
  '.rows | length == 1 and (.[0] | .precision == "fp32" and .channels_last == true and .batch == 2
     and .ms_per_batch > 0 and .images_per_second > 0 and .gflops > 0
     and (keys == ["batch", "channels_last", "gflops", "images_per_second", "ms_per_batch", "precision"]))' "$report"

# "fp32 2 of conv, paired: F (network N, lone convolution C GFLOP/s; median of P pairs)"
line="$(grep -E '^ +fp32 +2 of conv, paired: ' <<< "$out")"
check "no paired-ceiling line for fp32 batch 2 in: $out" -- test -n "$line"
re='paired: ([0-9.]+) \(network ([0-9.]+), lone convolution ([0-9.]+) GFLOP/s; median of ([0-9]+) pairs\)'
if [[ "$line" =~ $re ]]; then
  fraction="${BASH_REMATCH[1]}" network="${BASH_REMATCH[2]}" conv="${BASH_REMATCH[3]}" pairs="${BASH_REMATCH[4]}"
  check "paired fraction $fraction, network $network, conv $conv not all positive" -- \
    awk -v f="$fraction" -v n="$network" -v c="$conv" 'BEGIN { exit !(f > 0 && n > 0 && c > 0) }'
  check "fewer than 5 pairs: $pairs" -- test "$pairs" -ge 5
else
  echo "FAIL: paired-ceiling line does not parse: $line"
  fail=1
fi

# Without the flag there is no paired line.
out="$("$bench" --config "$config" --batch_sizes 1 --seconds 0 --precision fp32 --conv_ceiling=false 2>&1)"
check "a paired line without --paired_ceiling: $out" -- test -z "$(grep 'of conv, paired' <<< "$out")"

exit $fail
