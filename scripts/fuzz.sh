#!/usr/bin/env bash
# Runs every libFuzzer target built in BUILD_DIR (make fuzz) for SECONDS each on
# its seed corpus (fuzz/corpus/NAME) and prints one line per target:
#   fuzz_NAME: N runs, C crashes
# An input that crashes a target is kept in fuzz/crashes/NAME/, where `make test`
# replays it from then on. Exits 1 when any target crashed.
#   scripts/fuzz.sh BUILD_DIR SECONDS
set -uo pipefail
build="$1"; seconds="$2"
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
status=0
for binary in "$build"/bin/fuzz_*; do
  name="$(basename "$binary")"; name="${name#fuzz_}"
  crashes="$root/fuzz/crashes/$name"
  mkdir -p "$crashes" "$work/$name"
  before="$(ls "$crashes" | wc -l)"
  # New corpus entries go to the scratch folder; the seeds are only read.
  "$binary" -max_total_time="$seconds" -print_final_stats=1 -artifact_prefix="$crashes/" \
    "$work/$name" "$root/fuzz/corpus/$name" > "$work/$name.log" 2>&1
  runs="$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$work/$name.log" | grep -Eo '[0-9]+$' | tail -1)"
  found=$(( $(ls "$crashes" | wc -l) - before ))
  echo "fuzz_$name: ${runs:-0} runs, $found crashes"
  if [[ "${runs:-0}" -eq 0 ]]; then
    status=1
    echo "fuzz_$name ran nothing:"; tail -5 "$work/$name.log"
  fi
  if [[ $found -gt 0 ]]; then
    status=1
    grep -E "ERROR|SUMMARY|==[0-9]+==" "$work/$name.log" | head -5
  fi
  rmdir "$crashes" 2>/dev/null  # keep the folder only when it holds a crash
done
exit $status
