#!/usr/bin/env bash
# Every tool's --help: it lists the tool's own flags with their defaults, and it
# names source files relative to the repository, never by the build machine's
# absolute path.
#   help_text_test.sh SOURCE_DIR BIN_DIR
set -uo pipefail
source_dir="$(cd "$1" && pwd)"; bin="$2"
fail=0

# check_help TOOL FLAG: TOOL --help names FLAG with a default and SOURCE_DIR nowhere.
check_help() {
  local tool="$1" flag="$2" out
  out="$("$bin/$tool" --help 2>&1)"
  # The flag's own entry: from its name up to the next flag's.
  local entry="${out#*--$flag (}"
  entry="${entry%%$'\n'    --*}"
  if [[ "$out" != *"--$flag ("* || "$entry" != *"default:"* ]]; then
    echo "FAIL: $tool --help does not describe --$flag with its default"
    fail=1
  fi
  if [[ "$out" == *"$source_dir"* || "$out" == *"${source_dir#/}/"* ]]; then
    echo "FAIL: $tool --help names the build machine's source directory:"
    printf '%s\n' "$out" | grep -F "${source_dir#/}" | head -3
    fail=1
  fi
}

check_help tcm-server model_repository
check_help tcm-client server
check_help tcm-train steps
check_help tcm-eval model
check_help tcm-parity model_dir
check_help tcm-init-model output
check_help tcm-model-bench batch_sizes

# Flag groups are headed by the defining file, relative to the repository.
out="$("$bin/tcm-train" --help 2>&1)"
if [[ "$out" != *"Flags from tools/tcm_train.cc:"* ]]; then
  echo "FAIL: tcm-train --help does not head its flags with tools/tcm_train.cc"
  fail=1
fi
exit $fail
