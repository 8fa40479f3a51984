#!/usr/bin/env bash
# tcm-parity's command-line contract: exit 0 on parity, 1 when an output is
# off, 2 with one clear line on bad input.
set -uo pipefail
parity="$1"
fixtures="$2"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
fail=0

expect() {  # expect EXIT_CODE MESSAGE_FRAGMENT -- command...
  local code="$1" fragment="$2"
  shift 3
  local out
  out="$("$@" 2>&1)"
  local rc=$?
  if [[ $rc -ne $code ]]; then
    echo "FAIL: '$*' exited $rc, expected $code; output: $out"
    fail=1
  elif [[ "$out" != *"$fragment"* ]]; then
    echo "FAIL: '$*' output lacks '$fragment': $out"
    fail=1
  fi
  if [[ $code -eq 2 && $(printf '%s\n' "$out" | wc -l) -ne 1 ]]; then
    echo "FAIL: '$*' error is not one line: $out"
    fail=1
  fi
}

W="$fixtures/edm2_img64_tiny.weights.safetensors"
IO="$fixtures/edm2_img64_tiny.io.safetensors"

# A tolerance below the float32 error must fail: the check can fail.
expect 1 "FAIL" -- "$parity" --weights "$W" --io "$IO" --tolerance 1e-9

head -c 1000000 "$W" > "$tmp/truncated.safetensors"
expect 2 "truncated.safetensors: tensor" -- "$parity" --weights "$tmp/truncated.safetensors" --io "$IO"

printf 'garbage' > "$tmp/tiny.safetensors"
expect 2 "truncated: 7 bytes" -- "$parity" --weights "$tmp/tiny.safetensors" --io "$IO"

expect 2 "--tolerance: must be 0 (the precision's own) or more, got -1" -- "$parity" --weights "$W" --io "$IO" --tolerance -1
expect 2 "--tolerance: must be 0 (the precision's own) or more, got nan" -- "$parity" --weights "$W" --io "$IO" --tolerance nan
expect 2 "cannot open file" -- "$parity" --weights "$tmp/absent.safetensors" --io "$IO"
expect 2 "exactly one of --weights or --model_dir" -- "$parity" --io "$IO"
# A stray word is refused, not ignored.
expect 2 "tcm-parity: unexpected argument 'extra' (flags are --name=value)" -- "$parity" --weights "$W" --io "$IO" extra

# Weights of one fixture against the inputs of another: shapes disagree.
expect 2 "ddpmpp_cifar_tiny.io.safetensors: 'x' has shape [4, 3, 32, 32] but the network takes [N, 3, 64, 64]" -- "$parity" --weights "$W" --io "$fixtures/ddpmpp_cifar_tiny.io.safetensors"

# A conditional network without labels, and an unconditional one given labels.
expect 2 "no 'class_labels' for a network with 10 classes" -- "$parity" \
  --weights "$fixtures/ddpmpp_cond_tiny.weights.safetensors" --io "$fixtures/ddpmpp_cifar_tiny.io.safetensors"
expect 2 "'class_labels' given to an unconditional network" -- "$parity" \
  --weights "$fixtures/ddpmpp_cifar_tiny.weights.safetensors" --io "$fixtures/ddpmpp_cond_tiny.io.safetensors"

exit $fail
