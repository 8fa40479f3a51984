#!/usr/bin/env bash
# tcm-server refuses hostile or broken model files with one line naming the
# file and what is wrong, and exits 1 instead of hanging, allocating what a
# file declares, or dumping a LibTorch stack trace.
#   hostile_model_files_test.sh SOURCE_DIR BIN_DIR
set -uo pipefail
source_dir="$1"; bin="$2"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
fail=0
good="$source_dir/models/fashion-mnist-tcm"
checked=0

# A repository holding one copy of the embedded model, its files as given:
#   repo_with CONFIG_TEXT WEIGHTS_FILE -> prints the repository path
repo_with() {
  local repo
  repo="$(mktemp -d "$tmp/repo.XXXX")"
  mkdir -p "$repo/m"
  printf '%s\n' "$1" > "$repo/m/config.pbtxt"
  cp "$2" "$repo/m/weights.safetensors"
  echo "$repo"
}

# A safetensors file whose header is JSON, followed by DATA_BYTES zero bytes.
safetensors() {  # safetensors OUT JSON DATA_BYTES
  python3 - "$1" "$2" "$3" <<'PY'
import struct, sys
out, header, data = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3])
with open(out, "wb") as f:
    f.write(struct.pack("<Q", len(header)) + header + b"\0" * data)
PY
}

# refused REPO FRAGMENT: tcm-server exits 1 within 60 s with one line that
# names the model's directory and contains FRAGMENT.
refused() {
  local out rc
  checked=$((checked + 1))
  out="$(timeout 60 "$bin/tcm-server" --model_repository "$1" --port 0 --metrics_port -1 --http_port -1 2>&1)"
  rc=$?
  if [[ $rc -ne 1 || "$out" != *"$2"* || "$out" != *"$1/m"* || $(printf '%s\n' "$out" | wc -l) -ne 1 ]]; then
    echo "FAIL: expected exit 1 and one line with '$2'; got exit $rc and:"
    printf '%s\n' "$out" | head -5
    fail=1
  fi
}

config="$(cat "$good/config.pbtxt")"
refused "$(repo_with "${config/model_channels: 32/model_channels: 2000000000}" "$good/weights.safetensors")" \
  "config.pbtxt: edm2.model_channels: must be at most 4096, got 2000000000"
refused "$(repo_with "${config/num_classes: 10/num_classes: 4000000000}" "$good/weights.safetensors")" \
  "config.pbtxt: num_classes: must be at most 100000, got 4000000000"
refused "$(repo_with "${config/num_blocks: 1/num_blocks: 100000}" "$good/weights.safetensors")" \
  "config.pbtxt: edm2.num_blocks: must be at most 64"

safetensors "$tmp/overflow.safetensors" \
  '{"w": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 0]}}' 0
refused "$(repo_with "$config" "$tmp/overflow.safetensors")" "weights.safetensors: tensor 'w': shape [4294967296, 4294967296] is too large"
safetensors "$tmp/offsets.safetensors" '{"w": {"dtype": "F32", "shape": [4], "data_offsets": [16, 0]}}' 16
refused "$(repo_with "$config" "$tmp/offsets.safetensors")" "data_offsets [16, 0] out of range"
safetensors "$tmp/dtype.safetensors" '{"w": {"dtype": "F8_E9", "shape": [1], "data_offsets": [0, 1]}}' 1
refused "$(repo_with "$config" "$tmp/dtype.safetensors")" "unknown dtype 'F8_E9'"
safetensors "$tmp/meta.safetensors" '{"__metadata__": {"config": {"nested": 1}}}' 0
refused "$(repo_with "$config" "$tmp/meta.safetensors")" "metadata 'config' is not a string"
safetensors "$tmp/deep.safetensors" "{\"w\": $(printf '[%.0s' {1..5000})$(printf ']%.0s' {1..5000})}" 0
refused "$(repo_with "$config" "$tmp/deep.safetensors")" "JSON nested deeper than 8 levels"
head -c 1000 "$good/weights.safetensors" > "$tmp/truncated.safetensors"
refused "$(repo_with "$config" "$tmp/truncated.safetensors")" "weights.safetensors: truncated or bad header"
# Weights of another shape than the config asks for.
refused "$(repo_with "${config/model_channels: 32/model_channels: 48}" "$good/weights.safetensors")" \
  "weights.safetensors: weight '"
# Files that are not regular files: read, a FIFO would block and a device never end.
fifo_repo="$(repo_with "$config" "$good/weights.safetensors")"
rm "$fifo_repo/m/config.pbtxt" && mkfifo "$fifo_repo/m/config.pbtxt"
refused "$fifo_repo" "config.pbtxt: not a regular file"
device_repo="$(repo_with "$config" "$good/weights.safetensors")"
ln -sf /dev/zero "$device_repo/m/weights.safetensors"
refused "$device_repo" "weights.safetensors: not a regular file"
loop_repo="$(repo_with "$config" "$good/weights.safetensors")"
ln -s labels.txt "$loop_repo/m/labels.txt"
refused "$loop_repo" "labels.txt: cannot open file"
# Text quoted from a file reaches the log escaped: a newline in it cannot
# forge a line of the server's own.
refused "$(repo_with "${config/architecture: \"EDM2UNet\"/architecture: \"X\\ntcm-server: model m loaded\"}" \
  "$good/weights.safetensors")" "X\\x0atcm-server: model m loaded"

# Weights that read and build (every value finite) but compute garbage: an
# output gain of 3e38 overflows the network's output to infinities and NaN.
# The warm-up refuses the model, naming it, instead of serving such images
# while health says SERVING.
nan_repo="$(repo_with "$config" "$good/weights.safetensors")"
python3 - "$nan_repo/m/weights.safetensors" <<'PY'
import json, struct, sys
with open(sys.argv[1], "r+b") as f:
    header = struct.unpack("<Q", f.read(8))[0]
    offsets = json.loads(f.read(header))["model.out_gain"]["data_offsets"]
    f.seek(8 + header + offsets[0])
    f.write(struct.pack("<f", 3e38))
PY
checked=$((checked + 1))
out="$(timeout 120 "$bin/tcm-server" --model_repository "$nan_repo" --port 0 --metrics_port -1 --http_port -1 2>&1)"
rc=$?
last="$(printf '%s\n' "$out" | tail -1)"
if [[ $rc -ne 1 || "$last" != *"warm-up of 'm' failed: "*" output values of a first-step pass of "*" are not finite (NaN or infinite)"* ]]; then
  echo "FAIL: expected exit 1 and a last line refusing model 'm' as not finite; got exit $rc and:"
  printf '%s\n' "$out" | tail -5
  fail=1
fi

[[ $fail -eq 0 ]] && echo "PASS: $checked hostile model directories refused with one line each"
exit $fail
