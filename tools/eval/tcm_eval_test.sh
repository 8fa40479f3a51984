#!/usr/bin/env bash
# tcm-eval's command-line contract: one clear line and exit 2 on bad input; a
# short run on a randomly initialised model reports accuracy near chance.
#   tcm_eval_test.sh TCM_EVAL TCM_INIT_MODEL FASHION_CONFIG CLASSIFIER
set -uo pipefail
eval_bin="$1"
init_model="$2"
config="$3"
classifier="$4"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
fail=0
# One thread: the machine may be busy, and oversubscribed threads slow LibTorch many times over.
tcm_eval=("$eval_bin" --threads 1)
# Runs a command with at most 8 GiB of address space and for at most 2 minutes:
# a size flag that slipped past its check then fails (std::bad_alloc, or exit
# 124) instead of eating the machine's memory or hanging (under this limit, a
# tcm-eval that let --threads 1025 through hung).
limited=(timeout 120 bash -c 'ulimit -v 8388608 && exec "$@"' limited)

expect_error() {  # expect_error MESSAGE_FRAGMENT -- command...
  local fragment="$1"
  shift 2
  local out rc
  out="$("$@" 2>&1)"
  rc=$?
  if [[ $rc -ne 2 ]]; then
    echo "FAIL: '$*' exited $rc, expected 2; output: $out"
    fail=1
  elif [[ "$out" != *"$fragment"* ]]; then
    echo "FAIL: '$*' output lacks '$fragment': $out"
    fail=1
  elif [[ $(printf '%s\n' "$out" | wc -l) -ne 1 ]]; then
    echo "FAIL: '$*' error is not one line: $out"
    fail=1
  fi
}

"$init_model" --config "$config" --output "$tmp/random" > /dev/null || { echo "FAIL: tcm-init-model"; exit 1; }
sed -e 's/img_channels: 1/img_channels: 3/' "$config" > "$tmp/rgb.pbtxt"
"$init_model" --config "$tmp/rgb.pbtxt" --output "$tmp/rgb" > /dev/null || { echo "FAIL: tcm-init-model rgb"; exit 1; }

expect_error "--steps must be 1 or 2" -- "${tcm_eval[@]}" --model "$tmp/random" --steps 3 --classifier "$classifier"
expect_error "--steps must be 1 or 2" -- "${tcm_eval[@]}" --model "$tmp/random" --steps 1,x --classifier "$classifier"
# The size flags, each in its range, refused in one line before any work. The
# values just past a bound name an absent model: were the check missed, the run
# would fail at once on the model rather than draw a million images.
expect_error "--num: must be in [2, 1000000] (a covariance needs two images), got 0" -- \
  "${tcm_eval[@]}" --model "$tmp/random" --num 0 --classifier "$classifier"
expect_error "--num: must be in [2, 1000000] (a covariance needs two images), got 1000001" -- \
  "${tcm_eval[@]}" --model "$tmp/absent" --num 1000001 --classifier "$classifier"
expect_error "--num: must be in [2, 1000000] (a covariance needs two images), got 1000000000" -- \
  "${limited[@]}" "${tcm_eval[@]}" --model "$tmp/random" --num 1000000000 --batch_size 1000000000 \
  --classifier "$classifier"
for b in 0 -5 4097 1000000000; do
  expect_error "--batch_size: must be in [1, 4096], got $b" -- \
    "${limited[@]}" "${tcm_eval[@]}" --model "$tmp/random" --num 20 --batch_size "$b" --classifier "$classifier"
done
for o in -1=random 1001=absent 1500000000=random; do
  expect_error "--ode_steps: must be 0 (off) or a number of noise levels in [1, 1000], got ${o%%=*}" -- \
    "${limited[@]}" "${tcm_eval[@]}" --model "$tmp/${o#*=}" --ode_steps "${o%%=*}" --num 20 --classifier "$classifier"
done
for t in -1=absent 1025=absent 2147483647=random; do
  expect_error "--threads: must be in [0, 1024] (0 = one per core), got ${t%%=*}" -- \
    "${limited[@]}" "$eval_bin" --threads "${t%%=*}" --model "$tmp/${t#*=}" --num 20 --classifier "$classifier"
done
# --transition_t: in (0, t_max) of --model (80 here), named as itself, not as --teacher. Each GIVEN|PRINTED.
for t in "85|85" "80|80" "80.000001|80.000001 (80 as a float32)"; do
  expect_error "--transition_t: with --model's t_max, must be in (0, t_max = 80), got ${t#*|}" -- \
    "${tcm_eval[@]}" --model "$tmp/random" --teacher "$tmp/random" --transition_t "${t%%|*}" --classifier "$classifier"
done
for t in "0|0" "-1|-1" "nan|nan" "inf|inf" "1e-50|1e-50 (0 as a float32)"; do
  expect_error "--transition_t: must be in (0, t_max) of --model, got ${t#*|}" -- \
    "${tcm_eval[@]}" --model "$tmp/random" --teacher "$tmp/random" --transition_t "${t%%|*}" --classifier "$classifier"
done
help="$("$eval_bin" --help 2>&1 | tr -s ' \n' ' ')"  # --help wraps its lines
for range in "2 to 1000000" "1 to 4096" "0 to 1024" "else 1 to 1000" "in (0, t_max) of --model"; do
  [[ "$help" == *"$range"* ]] || { echo "FAIL: --help does not state the range '$range'"; fail=1; }
done
expect_error "--model: give a model directory" -- "${tcm_eval[@]}" --classifier "$classifier"
expect_error "--model: $tmp/absent/config.pbtxt" -- "${tcm_eval[@]}" --model "$tmp/absent" --classifier "$classifier"
expect_error "--model: $tmp/rgb makes 3-channel 32x32 images of 10 classes" -- \
  "${tcm_eval[@]}" --model "$tmp/rgb" --classifier "$classifier"
expect_error "--teacher: $tmp/rgb makes 3-channel" -- \
  "${tcm_eval[@]}" --model "$tmp/random" --teacher "$tmp/rgb" --classifier "$classifier"
expect_error "--classifier: $tmp/absent.safetensors" -- \
  "${tcm_eval[@]}" --model "$tmp/random" --classifier "$tmp/absent.safetensors"
expect_error "--validation_images: must be 0 (the test set) or 2 to 59999 (images of the training split), got 1" -- \
  "${tcm_eval[@]}" --model "$tmp/random" --validation_images 1 --classifier "$classifier"
expect_error "--validation_images: must be 0 (the test set) or 2 to 59999" -- \
  "${tcm_eval[@]}" --model "$tmp/random" --validation_images 60000 --classifier "$classifier"
expect_error "--floor measures against the test set: leave out --validation_images" -- \
  "${tcm_eval[@]}" --floor --validation_images 5000 --classifier "$classifier"
expect_error "--out: give the path" -- "${tcm_eval[@]}" --train_classifier
# --train_classifier's --epochs and --train_batch_size (a huge batch overflowed the batch count);
# limited, so that a check that is missed fails within the timeout instead of training.
for e in 0 1001; do
  expect_error "--epochs: must be in [1, 1000], got $e" -- \
    "${limited[@]}" "${tcm_eval[@]}" --train_classifier --out "$tmp/c.st" --epochs "$e"
done
for b in 0 65537 9223372036854775807; do
  expect_error "--train_batch_size: must be in [1, 65536], got $b" -- \
    "${limited[@]}" "${tcm_eval[@]}" --train_classifier --out "$tmp/c.st" --train_batch_size "$b"
done
expect_error "--grid_dir needs --model and consistency sampling" -- \
  "${tcm_eval[@]}" --model "$tmp/random" --ode_steps 3 --grid_dir "$tmp" --classifier "$classifier"
expect_error "--grid_dir: " -- \
  "${tcm_eval[@]}" --model "$tmp/random" --grid_dir "$tmp/absent" --classifier "$classifier"

# End to end: 40 images per step count, the composed sampler with the model as its own teacher.
mkdir "$tmp/grids"
if ! "${tcm_eval[@]}" --model "$tmp/random" --teacher "$tmp/random" --num 40 --batch_size 16 --classifier "$classifier" \
    --json "$tmp/out.json" --grid_dir "$tmp/grids" > "$tmp/stdout" 2> "$tmp/stderr"; then
  echo "FAIL: end-to-end run: $(cat "$tmp/stdout" "$tmp/stderr")"
  exit 1
fi
grep -q "accuracy" "$tmp/stdout" || { echo "FAIL: no table: $(cat "$tmp/stdout")"; fail=1; }
grep -q "accuracy per class.*T-shirt/top.*Ankle boot" "$tmp/stdout" || { echo "FAIL: no per-class header: $(cat "$tmp/stdout")"; fail=1; }
grep -q "2-step: 40/40 images" "$tmp/stderr" || { echo "FAIL: no progress: $(cat "$tmp/stderr")"; fail=1; }
/usr/bin/python3 - "$tmp/out.json" <<'PY' || fail=1
import json, sys
out = json.load(open(sys.argv[1]))
rows = out["results"]
assert [r["steps"] for r in rows] == [1, 2], rows
for r in rows:
    assert r["images"] == 40, r
    assert 0.0 <= r["class_accuracy"] <= 0.5, f"accuracy far from chance (0.1): {r}"
    per_class = r["class_accuracy_per_class"]
    # 40 images: 4 of each class, so every per-class figure is a multiple of 1/4 and they average to the whole.
    assert len(per_class) == 10 and all(a * 4 == round(a * 4) and 0 <= a <= 1 for a in per_class), r
    assert abs(sum(per_class) / 10 - r["class_accuracy"]) < 1e-9, r
    assert r["fd"] > 0 and r["fd"] < 1e6, r
    # An untrained network's images lie outside the real images' manifold and cover little of it.
    assert 0.0 <= r["manifold_precision"] <= 0.5 and 0.0 <= r["manifold_recall"] <= 0.5, r
    assert r["images_per_second"] > 0, r
assert out["transition_t"] == 1.0 and out["reference"]["images"] == 10000, out
assert out["manifold_neighbours"] == 3, out
PY
grep -Eq '^evals +sampler +accuracy +FD +precision +recall +images/s$' "$tmp/stdout" ||
  { echo "FAIL: no precision and recall columns: $(cat "$tmp/stdout")"; fail=1; }
# --grid_dir: one 320x320 grayscale PNG per step count (10 classes x 10 seeds of 32x32).
/usr/bin/python3 - "$tmp/grids" <<'PY' || fail=1
import struct, sys
for steps in (1, 2):
    head = open(f"{sys.argv[1]}/samples-{steps}step.png", "rb").read(26)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", head
    width, height, depth, color = struct.unpack(">IIBB", head[16:26])
    assert (width, height, color) == (320, 320, 0), (steps, width, height, color)
PY

# Against the held-out training images instead of the test set: the same samples, another FD.
if ! "${tcm_eval[@]}" --model "$tmp/random" --teacher "$tmp/random" --num 40 --batch_size 16 --classifier "$classifier" \
    --validation_images 5000 --json "$tmp/held-out.json" > "$tmp/held-out.stdout" 2>&1; then
  echo "FAIL: held-out run: $(cat "$tmp/held-out.stdout")"
  exit 1
fi
grep -q "FD against fashion-mnist training split, images 55000 to 59999 (held out by tcm-train --validation_images 5000) (5000 images)" \
  "$tmp/held-out.stdout" || { echo "FAIL: no held-out reference line: $(cat "$tmp/held-out.stdout")"; fail=1; }
/usr/bin/python3 - "$tmp/out.json" "$tmp/held-out.json" <<'PY' || fail=1
import json, sys
test, held = (json.load(open(p)) for p in sys.argv[1:3])
assert held["reference"]["images"] == 5000 and "images 55000 to 59999" in held["reference"]["dataset"], held
for t, h in zip(test["results"], held["results"]):
    assert t["class_accuracy_per_class"] == h["class_accuracy_per_class"], "the same samples"
    assert h["fd"] > 0 and h["fd"] != t["fd"], (t["fd"], h["fd"])
PY

# Fewer images than classes: a class no image requested has no accuracy, "-" in the table and null in the JSON.
if ! "${tcm_eval[@]}" --model "$tmp/random" --steps 1 --num 3 --batch_size 2 --classifier "$classifier" \
    --json "$tmp/three.json" > "$tmp/three.stdout" 2>&1; then
  echo "FAIL: 3-image run: $(cat "$tmp/three.stdout")"
  exit 1
fi
grep -Eq '^ +1 +[01]\.0000 +[01]\.0000 +[01]\.0000( +-){7}$' "$tmp/three.stdout" ||
  { echo "FAIL: per-class row of 3 images is not 3 accuracies and 7 '-': $(cat "$tmp/three.stdout")"; fail=1; }
/usr/bin/python3 - "$tmp/three.json" <<'PY' || fail=1
import json, sys
rows = json.load(open(sys.argv[1]))["results"]
assert len(rows) == 1 and rows[0]["images"] == 3, rows
per_class = rows[0]["class_accuracy_per_class"]
assert len(per_class) == 10 and per_class[3:] == [None] * 7, per_class
assert all(a in (0.0, 1.0) for a in per_class[:3]), per_class
assert abs(sum(per_class[:3]) / 3 - rows[0]["class_accuracy"]) < 1e-9, rows
# Three images have no third neighbour: no precision or recall.
assert rows[0]["manifold_precision"] is None and rows[0]["manifold_recall"] is None, rows
PY
grep -Eq '^ +1 +model +[01]\.[0-9]{4} +[0-9.]+ +- +- +[0-9.]+$' "$tmp/three.stdout" ||
  { echo "FAIL: 3-image row does not show '-' for precision and recall: $(cat "$tmp/three.stdout")"; fail=1; }

# The Heun ODE sampler: one row of 2N-1 network evaluations.
if ! "${tcm_eval[@]}" --model "$tmp/random" --ode_steps 3 --num 20 --batch_size 10 --classifier "$classifier" \
    --json "$tmp/ode.json" > "$tmp/ode.stdout" 2>&1; then
  echo "FAIL: ODE run: $(cat "$tmp/ode.stdout")"
  exit 1
fi
/usr/bin/python3 - "$tmp/ode.json" <<'PY' || fail=1
import json, sys
rows = json.load(open(sys.argv[1]))["results"]
assert len(rows) == 1 and rows[0]["steps"] == 5 and rows[0]["sampler"] == "Heun ODE, 3 levels", rows
assert rows[0]["images"] == 20 and rows[0]["fd"] > 0 and 0.0 <= rows[0]["class_accuracy"] <= 0.6, rows
PY

# --floor: real images against real ones. The first 10,000 training images lie
# mostly within the test images' manifold and cover most of it.
if ! "${tcm_eval[@]}" --floor --classifier "$classifier" --json "$tmp/floor.json" > "$tmp/floor.stdout" 2>&1; then
  echo "FAIL: floor run: $(cat "$tmp/floor.stdout")"
  exit 1
fi
grep -Eq '^floor: precision 0\.[0-9]{4}, recall 0\.[0-9]{4} of the first 10000 training images against the test set$' \
  "$tmp/floor.stdout" || { echo "FAIL: no floor precision line: $(cat "$tmp/floor.stdout")"; fail=1; }
/usr/bin/python3 - "$tmp/floor.json" <<'PY' || fail=1
import json, sys
floor = json.load(open(sys.argv[1]))["floor"]
assert 0.5 < floor["manifold_precision"] < 1.0 and 0.5 < floor["manifold_recall"] < 1.0, floor
assert 0.0 < floor["fd_test_train"] < 5.0 and floor["train_images"] == 60000, floor
PY

exit $fail
