#!/usr/bin/env bash
# Runs torch-free service-layer test binaries built with ThreadSanitizer
# (build-tsan, see make test-sanitize) against the instrumented Abseil in
# ABSEIL_DIR (scripts/build-tsan-abseil.sh), stopping at the first report.
# Refuses to run a binary that would load an uninstrumented Abseil, which
# would hide every lock taken inside gRPC.
#
#   scripts/run-tsan-tests.sh BUILD_DIR ABSEIL_DIR TEST...
set -euo pipefail
BUILD_DIR=$1
ABSEIL_DIR=$(realpath "$2")
shift 2
ROOT=$(cd "$(dirname "$0")/.." && pwd)
for t in "$@"; do
  binary="$BUILD_DIR/bin/$t"
  [[ -x "$binary" ]] || { echo "run-tsan-tests: no $binary" >&2; exit 1; }
  for loaded in $(LD_LIBRARY_PATH="$ABSEIL_DIR" ldd "$binary" | awk '/libabsl_/ { print $3 }'); do
    if [[ "$(dirname "$(realpath "$loaded")")" != "$ABSEIL_DIR" ]]; then
      echo "run-tsan-tests: $t would load $loaded, not the instrumented Abseil in $ABSEIL_DIR" >&2
      exit 1
    fi
  done
  echo "run-tsan-tests: $t"
  LD_LIBRARY_PATH="$ABSEIL_DIR" TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$ROOT/tests/tsan.supp" \
    "$binary" --gtest_brief=1
done
echo "run-tsan-tests: $# test binaries passed under ThreadSanitizer"
