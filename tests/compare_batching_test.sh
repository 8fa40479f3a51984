#!/usr/bin/env bash
# scripts/compare-step-level-batching.sh end to end on the embedded models: two
# real servers, two pairs of one-second windows. Checks the report's shape and
# that both servers counted the passes they ran; the figures themselves are not
# judged (tests do not time things).
set -uo pipefail
source_dir="$1"; bin_dir="$2"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cd "$source_dir" || exit 1

if ! OUT_DIR="$tmp/out" TCM_BIN="$bin_dir" bash scripts/compare-step-level-batching.sh fashion-mnist-tcm 2 2 1 \
    > "$tmp/report.txt" 2>&1; then
  echo "FAIL: the script failed:"; cat "$tmp/report.txt"; exit 1
fi
cat "$tmp/report.txt"
fail=0
check() { grep -Eq "$1" "$tmp/report.txt" || { echo "FAIL: no line matching: $1"; fail=1; }; }
check '^ +1 +[0-9.]+ +[0-9.]+ +[0-9.]+$'
check '^ +2 +[0-9.]+ +[0-9.]+ +[0-9.]+$'
check '^mean img/s: step-level [0-9.]+, apart [0-9.]+; median ratio [0-9.]+; step-level ahead in [0-2] of 2 pairs \(sign test p = [0-9.e-]+\)$'
check '^server step_level: [1-9][0-9]* forward passes, [0-9.]+ rows per pass'
check '^server apart: [1-9][0-9]* forward passes, [0-9.]+ rows per pass'
for mode in step_level apart; do
  for i in 1 2; do
    [[ -s "$tmp/out/$mode-$i.json" ]] || { echo "FAIL: no $mode-$i.json"; fail=1; }
  done
done
# Both servers are gone once the script returns: their metrics ports refuse.
for mode in true false; do
  port="$(sed -nE 's/.*metrics on port ([0-9]+).*/\1/p' "$tmp/out/server-$mode.log")"
  [[ -n "$port" ]] || { echo "FAIL: server-$mode.log names no metrics port"; fail=1; continue; }
  curl -sf "127.0.0.1:$port/metrics" > /dev/null && { echo "FAIL: the $mode server outlived the script"; fail=1; }
done
exit $fail
