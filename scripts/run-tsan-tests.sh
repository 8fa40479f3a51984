#!/usr/bin/env bash
# Runs test binaries built with ThreadSanitizer (build-tsan, see make
# test-sanitize) against instrumented Abseil and gRPC libraries
# (scripts/build-tsan-abseil.sh, scripts/build-tsan-grpc.sh), stopping at the
# first report. LIB_DIRS is a colon-separated list of those libraries' folders.
# Refuses to run a binary that would load an uninstrumented Abseil or gRPC
# library, which would hide the locks and hand-overs inside them.
#
#   scripts/run-tsan-tests.sh BUILD_DIR LIB_DIRS TEST...
set -euo pipefail
BUILD_DIR=$1
LIB_PATH=""
declare -A INSTRUMENTED=()
IFS=: read -r -a dirs <<< "$2"
for dir in "${dirs[@]}"; do
  dir=$(realpath "$dir")
  INSTRUMENTED[$dir]=1
  LIB_PATH="${LIB_PATH:+$LIB_PATH:}$dir"
done
shift 2
ROOT=$(cd "$(dirname "$0")/.." && pwd)
for t in "$@"; do
  binary="$BUILD_DIR/bin/$t"
  [[ -x "$binary" ]] || { echo "run-tsan-tests: no $binary" >&2; exit 1; }
  for loaded in $(LD_LIBRARY_PATH="$LIB_PATH" ldd "$binary" |
    awk '$1 ~ /^lib(absl_|grpc|gpr\.|upb\.|address_sorting\.)/ { print $3 }'); do
    if [[ -z "${INSTRUMENTED[$(dirname "$(realpath "$loaded")")]:-}" ]]; then
      echo "run-tsan-tests: $t would load $loaded, not an instrumented library from $LIB_PATH" >&2
      exit 1
    fi
  done
  echo "run-tsan-tests: $t"
  LD_LIBRARY_PATH="$LIB_PATH" TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$ROOT/tests/tsan.supp" \
    "$binary" --gtest_brief=1
done
echo "run-tsan-tests: $# test binaries passed under ThreadSanitizer"
