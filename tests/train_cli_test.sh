#!/usr/bin/env bash
# tcm-train end to end on a tiny network: each stage runs a few steps from the
# one before, a stopped run resumes where it stopped, the exported model
# directory is served by tcm-server unchanged, and bad input is one clear line.
#   train_cli_test.sh TCM_TRAIN TCM_SERVER TCM_CLIENT CLASSIFIER
set -uo pipefail
train="$1"
server="$2"
client="$3"
classifier="$4"
source "$(dirname "$0")/server_lib.sh"
fail=0
check() { if ! eval "$1"; then echo "FAIL: $2"; fail=1; fi; }

cat > "$TMP/tiny.pbtxt" <<'CONFIG'
architecture: "EDM2UNet"
img_resolution: 32
img_channels: 1
num_classes: 10
edm2 { model_channels: 8 channel_mult: [1, 2] num_blocks: 1 attn_resolutions: [] }
CONFIG
common=(--threads 1 --batch_size 4 --log_every 1 --checkpoint_every 1 --validation_images 100 --selection_samples 20
  --classifier "$classifier")

# Diffusion from random weights, stopped after 2 steps, then resumed to 3.
"$train" diffusion --config "$TMP/tiny.pbtxt" --out "$TMP/edm" --steps 2 "${common[@]}" > "$TMP/edm1.log" 2>&1 \
  || { echo "FAIL: diffusion"; cat "$TMP/edm1.log"; exit 1; }
# As if the first run had logged a step past its checkpoint and then crashed in mid-line: the resumed
# run cuts log.jsonl back to the checkpoint's step before it logs the steps again.
printf '{"step": 3, "loss": 9}\n{"step": 4, "lo' >> "$TMP/edm/log.jsonl"
"$train" diffusion --config "$TMP/tiny.pbtxt" --out "$TMP/edm" --steps 3 --resume "${common[@]}" > "$TMP/edm2.log" 2>&1 \
  || { echo "FAIL: diffusion --resume"; cat "$TMP/edm2.log"; exit 1; }
check 'grep -q "resumed .*checkpoint.pt at step 2" "$TMP/edm2.log"' "resume message"
check 'grep -q "^step 3/3  loss" "$TMP/edm2.log"' "progress line after resume"
check '! grep -q "^step [12]/" "$TMP/edm2.log"' "resumed run repeats no step"
check '[[ $(wc -l < "$TMP/edm/log.jsonl") -eq 3 ]]' "log.jsonl holds one line per step across both runs"
check '[[ $(jq -c -s "map(.step)" "$TMP/edm/log.jsonl") == "[1,2,3]" ]] && ! grep -q "\"loss\": 9," "$TMP/edm/log.jsonl"' \
  "a resume drops the lines logged past the checkpoint and a partial last line"
check '[[ -f "$TMP/edm/model/weights.safetensors" && -f "$TMP/edm/model/labels.txt" ]]' "diffusion model exported"
check 'grep -q "Ankle boot" "$TMP/edm/model/labels.txt"' "class names exported"
check 'grep -q "\"lr\": \"0.001\"" "$TMP/edm/settings.json" && grep -q "\"stage\": \"diffusion\"" "$TMP/edm/settings.json"' \
  "settings.json records the run's flags"
check '! grep -q "\"steps\"" "$TMP/edm/settings.json"' "settings.json leaves out the flags that only pace the run"

edm_checkpoint_sum="$(md5sum < "$TMP/edm/checkpoint.pt")"

# Stage 1 from the diffusion model, stage 2 from stage 1 with it as teacher.
"$train" consistency --init "$TMP/edm/model" --out "$TMP/ct" --steps 2 "${common[@]}" > "$TMP/ct.log" 2>&1 \
  || { echo "FAIL: consistency"; cat "$TMP/ct.log"; exit 1; }
check 'grep -q "ratio 0.5000" "$TMP/ct.log"' "stage 1 reports its gap ratio"
check 'grep -q "59900 images (100 held out)" "$TMP/ct.log"' "the held-out images are left out of training"
check 'grep -q "\"validation_images\": \"100\"" "$TMP/ct/settings.json"' "settings.json records the held-out count"
# mid_t chosen on the held-out images: of the candidates that beat 1 step on both measures, the lowest FD
# (of all candidates when none does), recorded in the model's config.
check 'grep -q "choosing mid_t among 0.821,2,5,10,20 by FD at 2 steps, of those that beat 1 step on both measures, 20 images each, against 100 held-out images" "$TMP/ct.log"' \
  "stage 1 announces the mid_t choice"
chosen="$(jq -r .mid_t "$TMP/ct/selection.json" 2>/dev/null)"
expected="$(jq -r '.one_step as $one | [.candidates[] | select(.class_accuracy >= $one.class_accuracy and .fd < $one.fd)]
  | if length > 0 then min_by(.fd).mid_t else null end' "$TMP/ct/selection.json" 2>/dev/null)"
beats="$(jq -r .beats_one_step "$TMP/ct/selection.json" 2>/dev/null)"
if [[ "$expected" == null ]]; then
  expected="$(jq -r '[.candidates[]] | min_by(.fd) | .mid_t' "$TMP/ct/selection.json" 2>/dev/null)"
  check '[[ "$beats" == false ]]' "no candidate beats 1 step: beats_one_step is false ($beats)"
else
  check '[[ "$beats" == true ]]' "a candidate beats 1 step: beats_one_step is true ($beats)"
fi
check '[[ -n "$chosen" && "$chosen" == "$expected" ]]' "selection.json's mid_t follows its rule ($chosen, $expected)"
check 'grep -q "^  1 step       accuracy" "$TMP/ct.log"' "the 1-step score is printed beside the candidates"
check '[[ $(jq ".candidates | length" "$TMP/ct/selection.json") -eq 5 ]]' "selection.json scores every candidate"
check 'grep -q "^mid_t: $chosen$" "$TMP/ct/model/config.pbtxt"' "the chosen mid_t is in the exported config"
# bf16 and fp32 arithmetic both train; the run's first line says which.
"$train" consistency --init "$TMP/edm/model" --out "$TMP/ct-bf16" --steps 1 --precision bf16 --mid_t_candidates "" \
  "${common[@]}" > "$TMP/ct-bf16.log" 2>&1 || { echo "FAIL: consistency --precision bf16"; cat "$TMP/ct-bf16.log"; exit 1; }
check 'grep -q "1 steps, bf16, run directory" "$TMP/ct-bf16.log"' "bf16 training announced"
check '[[ ! -f "$TMP/ct-bf16/selection.json" ]] && grep -q "^mid_t: 0.821$" "$TMP/ct-bf16/model/config.pbtxt"' \
  "an empty --mid_t_candidates keeps the default"
"$train" consistency --init "$TMP/edm/model" --out "$TMP/ct-fp32" --steps 1 --precision fp32 --channels_last \
  --mid_t_candidates "" "${common[@]}" > "$TMP/ct-fp32.log" 2>&1 \
  || { echo "FAIL: consistency --precision fp32 --channels_last"; cat "$TMP/ct-fp32.log"; exit 1; }
check 'grep -q "1 steps, fp32 channels-last, run directory" "$TMP/ct-fp32.log"' "fp32 channels-last training announced"
check '[[ -f "$TMP/ct/model/samples-1step.png" && -f "$TMP/ct/model/samples-2step.png" ]]' "stage 1 sample grids"
# --precision auto: bf16 (where native) while the gap is wide, float32 once its ratio passes 0.985
# (schedule stage 6 from step 2: ratio 1 - 1/2^7 = 0.9922).
"$train" consistency --init "$TMP/edm/model" --out "$TMP/ct-auto" --steps 3 --start_stage 5 --double_every 2 \
  --mid_t_candidates "" "${common[@]}" > "$TMP/ct-auto.log" 2>&1 \
  || { echo "FAIL: consistency --precision auto"; cat "$TMP/ct-auto.log"; exit 1; }
native=false other=true
if grep -m1 '^flags' /proc/cpuinfo | grep -Eqw 'avx512_bf16|amx_bf16'; then
  native=true other=false
  check 'grep -q "3 steps, bf16, run directory" "$TMP/ct-auto.log"' "auto starts in bf16 on a CPU with native bf16"
  check 'grep -q "^tcm-train: from step 3 float32 (--precision auto): the gap ratio 0.9922 is above 0.985$" "$TMP/ct-auto.log"' \
    "auto switches to float32 at the step whose gap ratio passes 0.985"
else
  check 'grep -q "3 steps, fp32, run directory" "$TMP/ct-auto.log" && ! grep -q "from step" "$TMP/ct-auto.log"' \
    "auto is float32 throughout without native bf16"
fi
# --precision bf16 keeps bf16 past ratio 0.985 and warns once, at the first such step.
"$train" consistency --init "$TMP/edm/model" --out "$TMP/ct-bf16-gap" --steps 4 --start_stage 5 --double_every 2 \
  --precision bf16 --mid_t_candidates "" "${common[@]}" > "$TMP/ct-bf16-gap.log" 2>&1 \
  || { echo "FAIL: consistency --precision bf16 past ratio 0.985"; cat "$TMP/ct-bf16-gap.log"; exit 1; }
check 'grep -q "^tcm-train: warning: from step 3 the gap ratio 0.9922 is above 0.985 and --precision bf16 keeps bf16" "$TMP/ct-bf16-gap.log" && [[ $(grep -c "warning: from step" "$TMP/ct-bf16-gap.log") -eq 1 ]] && ! grep -q "float32 (--precision auto)" "$TMP/ct-bf16-gap.log" && grep -q "^step 4/4  loss" "$TMP/ct-bf16-gap.log"' \
  "--precision bf16 warns once where the gap ratio passes 0.985, stays in bf16 and trains on"
check 'grep -q "\"cpu_bf16_native\": \"$native\"" "$TMP/ct-auto/settings.json"' \
  "settings.json records whether the CPU that began the run has native bf16"
# Resumed on a CPU of the same kind, an auto run says nothing of it; on one of the other kind (as
# recorded), it continues and says that its arithmetic changes.
resume_auto() {
  "$train" consistency --init "$TMP/edm/model" --out "$TMP/ct-auto" --steps "$1" --start_stage 5 --double_every 2 \
    --resume --mid_t_candidates "" "${common[@]}" > "$TMP/ct-auto-$1.log" 2>&1 \
    || { echo "FAIL: consistency --precision auto --resume --steps $1"; cat "$TMP/ct-auto-$1.log"; exit 1; }
}
resume_auto 4
check 'grep -q "^step 4/4  loss" "$TMP/ct-auto-4.log" && ! grep -q "this run began on a CPU" "$TMP/ct-auto-4.log"' \
  "a resume on the same CPU kind continues without a word on the arithmetic"
sed -i "s/\"cpu_bf16_native\": \"$native\"/\"cpu_bf16_native\": \"$other\"/" "$TMP/ct-auto/settings.json"
resume_auto 5
began="$([[ $other == true ]] && echo "with native bf16 and this one has none" || echo "without native bf16 and this one has it")"
check 'grep -q "^tcm-train: --precision auto: this run began on a CPU $began: its" "$TMP/ct-auto-5.log" && grep -q "^step 5/5  loss" "$TMP/ct-auto-5.log"' \
  "a resume that changes auto's arithmetic is announced and continues"
# The EMA chosen on the held-out images among --ema_gamma's and the candidates' (3 steps: by then they differ).
"$train" consistency --init "$TMP/edm/model" --out "$TMP/ct-ema" --steps 3 --ema_type power --ema_gamma_candidates 2,40 \
  --mid_t_candidates "" "${common[@]}" > "$TMP/ct-ema.log" 2>&1 \
  || { echo "FAIL: consistency --ema_gamma_candidates"; cat "$TMP/ct-ema.log"; exit 1; }
check 'grep -q "choosing the EMA among gammas 16.97,2,40 by FD at 1 step, 20 images each, against 100 held-out images" "$TMP/ct-ema.log"' \
  "the EMA choice is announced"
ema="$(jq -r .ema_gamma "$TMP/ct-ema/selection.json" 2>/dev/null)"
lowest_ema="$(jq -r '[.ema_candidates[]] | min_by(.fd) | .gamma' "$TMP/ct-ema/selection.json" 2>/dev/null)"
check '[[ -n "$ema" && "$ema" == "$lowest_ema" ]]' "selection.json's EMA is its lowest-FD candidate ($ema, $lowest_ema)"
check '[[ $(jq "[.ema_candidates[].fd] | unique | length" "$TMP/ct-ema/selection.json") -eq 3 ]]' \
  "the three EMAs are scored and differ"
check '[[ $(jq "has(\"mid_t\")" "$TMP/ct-ema/selection.json") == false ]] && grep -q "^mid_t: 0.821$" "$TMP/ct-ema/model/config.pbtxt"' \
  "without mid_t candidates only the EMA is chosen"
check 'grep -q "\"ema_gamma_candidates\": \"2,40\"" "$TMP/ct-ema/settings.json"' "settings.json records the EMA candidates"
# The export is the chosen EMA: the same run with that gamma as its only EMA writes the same weights.
"$train" consistency --init "$TMP/edm/model" --out "$TMP/ct-ema-chosen" --steps 3 --ema_type power --ema_gamma "$ema" \
  --mid_t_candidates "" "${common[@]}" > "$TMP/ct-ema-chosen.log" 2>&1 \
  || { echo "FAIL: consistency --ema_gamma $ema"; cat "$TMP/ct-ema-chosen.log"; exit 1; }
check 'cmp -s "$TMP/ct-ema/model/weights.safetensors" "$TMP/ct-ema-chosen/model/weights.safetensors"' \
  "the exported weights are those of the chosen EMA (gamma $ema)"
# --eval_every scores --ema_gamma's EMA at 1 step on the held-out images while training runs, and
# changes nothing of the training: the same run as ct-ema, scored after every step.
"$train" consistency --init "$TMP/edm/model" --out "$TMP/ct-eval" --steps 3 --ema_type power --ema_gamma_candidates 2,40 \
  --mid_t_candidates "" --eval_every 1 --eval_samples 20 "${common[@]}" > "$TMP/ct-eval.log" 2>&1 \
  || { echo "FAIL: consistency --eval_every"; cat "$TMP/ct-eval.log"; exit 1; }
check 'cmp -s "$TMP/ct-ema/model/weights.safetensors" "$TMP/ct-eval/model/weights.safetensors"' \
  "the scores leave the training unchanged: the same weights as without them"
check 'diff <(jq -c "del(.images_per_second)" "$TMP/ct-ema/log.jsonl") <(jq -c "del(.images_per_second)" "$TMP/ct-eval/log.jsonl") > /dev/null' \
  "the scores leave the losses unchanged"
check '[[ $(jq -c -s "map(.step)" "$TMP/ct-eval/eval.jsonl") == "[1,2,3]" ]]' "eval.jsonl holds one score per step"
check '[[ $(jq -s "all(.steps == 1 and .samples == 20 and .held_out_images == 100 and .class_accuracy >= 0 and .class_accuracy <= 1 and .fd > 0)" "$TMP/ct-eval/eval.jsonl") == true ]]' \
  "each score names its samples and held-out images and holds an accuracy and an FD"
check 'grep -Eq "^eval at step 3: 1 step accuracy [01]\.[0-9]{4}  FD [0-9]+\.[0-9]{4}  \(20 samples against 100 held-out images, [0-9.]+ s\)$" "$TMP/ct-eval.log"' \
  "each score is printed"
# The last score is the final EMA's: the selection at the end scores the same weights (gamma 16.97) alike.
check '[[ $(jq -s --slurpfile sel "$TMP/ct-eval/selection.json" "last as \$e | \$sel[0].ema_candidates[0] | (.gamma == 16.97 and ((.class_accuracy - \$e.class_accuracy) | fabs) < 1e-5 and ((.fd - \$e.fd) | fabs) < 1e-3 * .fd)" "$TMP/ct-eval/eval.jsonl") == true ]]' \
  "the score at the last step matches the selection's score of the same EMA"
check '! grep -q "eval_every" "$TMP/ct-eval/settings.json"' "settings.json leaves out --eval_every (it does not change the run)"
"$train" truncated --init "$TMP/ct/model" --teacher "$TMP/ct/model" --t_lower 1 --boundary_prob 0.25 \
  --out "$TMP/tcm" --steps 2 "${common[@]}" > "$TMP/tcm.log" 2>&1 || { echo "FAIL: truncated"; cat "$TMP/tcm.log"; exit 1; }
check 'grep -Eq "boundary [0-9.]*[1-9]" "$TMP/tcm.log"' "stage 2 reports a non-zero boundary loss"
rm "$TMP/tcm/settings.json"  # as a run begun before runs recorded their settings
"$train" truncated --init "$TMP/ct/model" --teacher "$TMP/ct/model" --t_lower 1 --boundary_prob 0.25 \
  --out "$TMP/tcm" --steps 3 --resume "${common[@]}" > "$TMP/tcm2.log" 2>&1 \
  || { echo "FAIL: truncated --resume"; cat "$TMP/tcm2.log"; exit 1; }
check 'grep -q "resumed .*checkpoint.pt at step 2" "$TMP/tcm2.log"' "stage 2 resumes"
check 'grep -q "has no settings.json (begun by an older tcm-train); recording" "$TMP/tcm2.log"' "an unrecorded run adopts the command's settings"
check 'grep -q "\"transition_t\": \"1\"" "$TMP/tcm/settings.json"' "the adopted settings are recorded"
check 'grep -q "^step 3/3  loss" "$TMP/tcm2.log"' "stage 2 progress line after resume"
check '! grep -q "dropout" "$TMP/tcm/model/config.pbtxt"' "exported config carries no training-only dropout"
check 'grep -q "^transition_t: 1$" "$TMP/tcm/model-composed/config.pbtxt"' "composed model records t'"
check '[[ -f "$TMP/tcm/model-composed/samples-2step.png" ]]' "composed model sample grid"

# A signal once training is done (the run held by a gate file just before it chooses the sampling
# settings) ends the run at once, without a model directory; --resume on the finished run chooses
# and exports again.
touch "$TMP/choice.gate"
TCM_TEST_CHOICE_GATE="$TMP/choice.gate" "$train" consistency --init "$TMP/edm/model" --out "$TMP/ct-int" --steps 1 \
  "${common[@]}" > "$TMP/ct-int.log" 2> "$TMP/ct-int.err" &
pid=$!
while kill -0 $pid 2> /dev/null && ! grep -q "^tcm-train: held before choosing" "$TMP/ct-int.log"; do sleep 0.1; done
kill -TERM $pid 2> /dev/null
rm -f "$TMP/choice.gate"  # a run that ignored the signal goes on (and fails the checks below) rather than hangs
wait $pid
rc=$?
check '[[ $rc -eq 1 ]]' "a signal while choosing exits 1 (exit $rc)"
check '[[ "$(cat "$TMP/ct-int.err")" == "tcm-train: interrupted while choosing the sampling settings and exporting the model; $TMP/ct-int/checkpoint.pt holds the finished run (step 1): run the same command with --resume to choose and export again" ]]' \
  "a signal while choosing says so in one line: $(cat "$TMP/ct-int.err")"
check '[[ ! -e "$TMP/ct-int/model" && ! -e "$TMP/ct-int/model.tmp" && ! -e "$TMP/ct-int/selection.json" ]]' \
  "an interrupted choice leaves no model directory"
"$train" consistency --init "$TMP/edm/model" --out "$TMP/ct-int" --steps 1 --resume "${common[@]}" > "$TMP/ct-int2.log" 2>&1 \
  || { echo "FAIL: consistency --resume after an interrupted choice"; cat "$TMP/ct-int2.log"; exit 1; }
check 'grep -q "choosing mid_t among" "$TMP/ct-int2.log" && [[ -f "$TMP/ct-int/model/weights.safetensors" && -f "$TMP/ct-int/selection.json" ]]' \
  "--resume on the finished run chooses and exports"

# The exported stage-2 model directory serves unchanged.
mkdir -p "$TMP/repo" && cp -r "$TMP/tcm/model" "$TMP/repo/tiny-tcm" && cp -r "$TMP/tcm/model-composed" "$TMP/repo/tiny-composed"
start_server "$server" "$TMP/repo" --metrics_port -1 --workers 1 --intra_op_threads 1
for model in tiny-tcm tiny-composed; do
  check '"$client" --server "127.0.0.1:$GRPC_PORT" --model $model --class 9 --steps 2 --num 2 --out "$TMP/out-$model" > "$TMP/client.log" 2>&1' \
    "tcm-client against $model: $(cat "$TMP/client.log" 2>/dev/null)"
  check '[[ $(ls "$TMP/out-$model"/*.png 2>/dev/null | wc -l) -eq 2 ]]' "two PNGs of $model written"
done

# Bad input: one line naming the flag, exit 2.
expect_error() {  # expect_error FRAGMENT command...
  local fragment="$1"
  shift
  local out rc
  out="$("$@" 2>&1)"
  rc=$?
  if [[ $rc -ne 2 || "$out" != *"$fragment"* || $(printf '%s\n' "$out" | wc -l) -ne 1 ]]; then
    echo "FAIL: '$*' gave exit $rc and: $out"
    fail=1
  fi
}
expect_error "give one stage: diffusion, consistency or truncated" "$train"
expect_error 'stage: must be diffusion, consistency or truncated; got "distill"' "$train" distill --out "$TMP/x"
expect_error "--init: required" "$train" consistency --out "$TMP/x"
expect_error "--config: only for the diffusion stage; consistency takes its network and weights from --init" \
  "$train" consistency --init "$TMP/ct/model" --config "$TMP/x.pbtxt" --out "$TMP/x"
expect_error "--log_every: must be at least 1, got 0" "$train" consistency --log_every 0 --init "$TMP/ct/model" --out "$TMP/x"
expect_error "--checkpoint_every: must be at least 1, got -3" \
  "$train" consistency --checkpoint_every -3 --init "$TMP/ct/model" --out "$TMP/x"
expect_error "--teacher: required by the truncated stage" "$train" truncated --init "$TMP/ct/model" --t_lower 1 --out "$TMP/x"
expect_error "--t_lower (0.002) must be at least --transition_t (1): stage 2 trains over [t', t_max]" \
  "$train" truncated --init "$TMP/ct/model" --teacher "$TMP/ct/model" --out "$TMP/x"
expect_error '--tdist: must be "normal" or "t", got "cauchy"' "$train" consistency --tdist cauchy --init "$TMP/ct/model" --out "$TMP/x"
expect_error "--weighting: must be one of default, cout, cout_sq, sqrt, one" "$train" consistency --weighting l1 --init "$TMP/ct/model" --out "$TMP/x"
expect_error '--precision: must be auto, fp32 or bf16, got "fp16"' "$train" consistency --precision fp16 --init "$TMP/ct/model" --out "$TMP/x"
expect_error "--validation_images: must be at least 0 and below the data's 60000 images, got 60000" \
  "$train" consistency --validation_images 60000 --init "$TMP/ct/model" --out "$TMP/x"
expect_error "--mid_t_candidates: each value must be in (0, t_max = 80), got 90" \
  "$train" consistency --mid_t_candidates 5,90 --init "$TMP/ct/model" --out "$TMP/x" --classifier "$classifier"
expect_error "--ema_gamma_candidates: needs --ema_type=power" \
  "$train" consistency --ema_gamma_candidates 5 --init "$TMP/ct/model" --out "$TMP/x" --classifier "$classifier"
expect_error "--ema_gamma_candidates: each gamma must be positive and finite, got -2" \
  "$train" consistency --ema_type power --ema_gamma_candidates 5,-2 --init "$TMP/ct/model" --out "$TMP/x" --classifier "$classifier"
expect_error '--ema_gamma_candidates: a comma-separated list of numbers, got "5;7"' \
  "$train" consistency --ema_type power --ema_gamma_candidates "5;7" --init "$TMP/ct/model" --out "$TMP/x"
expect_error "--ema_gamma_candidates: only for the consistency and truncated stages" \
  "$train" diffusion --ema_type power --ema_gamma_candidates 5 --config "$TMP/tiny.pbtxt" --out "$TMP/x"
expect_error "--eval_every: must be 0 or more, got -1" \
  "$train" consistency --eval_every -1 --init "$TMP/ct/model" --out "$TMP/x" --classifier "$classifier"
expect_error "--eval_every: only for the consistency and truncated stages" \
  "$train" diffusion --eval_every 5 --config "$TMP/tiny.pbtxt" --out "$TMP/x"
expect_error "--eval_samples: must be in [2, 1000000], got 1" \
  "$train" consistency --eval_every 5 --eval_samples 1 --init "$TMP/ct/model" --out "$TMP/x" --classifier "$classifier"
expect_error "--eval_every: needs --validation_images (at least 2)" \
  "$train" consistency --eval_every 5 --validation_images 0 --mid_t_candidates "" --init "$TMP/ct/model" --out "$TMP/x" \
  --classifier "$classifier"
expect_error "--classifier: $TMP/none.safetensors" \
  "$train" consistency --classifier "$TMP/none.safetensors" --init "$TMP/ct/model" --out "$TMP/x"
expect_error '--data: unknown data set "mnist"' "$train" consistency --data mnist --init "$TMP/ct/model" --out "$TMP/x"
expect_error "--out: $TMP/edm is a run of the diffusion stage, not the consistency stage" \
  "$train" consistency --init "$TMP/ct/model" --out "$TMP/edm" --resume --threads 1
# A run's checkpoint is never overwritten by a new run, nor continued with other settings.
expect_error "--out: $TMP/edm holds a run already (checkpoint.pt); continue it with --resume" \
  "$train" diffusion --config "$TMP/tiny.pbtxt" --out "$TMP/edm" --steps 4 "${common[@]}"
expect_error "--resume: $TMP/edm was begun with other settings ($TMP/edm/settings.json): --lr: the run's 0.001, now 0.002; --seed: the run's 0, now 5. Repeat" \
  "$train" diffusion --config "$TMP/tiny.pbtxt" --out "$TMP/edm" --steps 4 --resume --lr 0.002 --seed 5 "${common[@]}"
expect_error "--resume: $TMP/none/checkpoint.pt does not exist" \
  "$train" diffusion --config "$TMP/tiny.pbtxt" --out "$TMP/none" --resume "${common[@]}"
# Numeric flags out of their range: refused before anything is done (no run directory).
for case in "ema_gamma -1|--ema_gamma: must be positive and finite, got -1" "grad_clip -1|--grad_clip: must be positive, got -1" \
  "ema_beta 1|--ema_beta: must be in [0, 1), got 1" "q 1|--q: must be above 1 and finite, got 1" \
  "start_stage -1|--start_stage: must be in [0, 1000000], got -1" "dropout nan|--dropout: must be in [0, 1), got nan" \
  "dropout 1|--dropout: must be in [0, 1), got 1" "ratio_limit 0|--ratio_limit: must be in (0, 0.99999], got 0" \
  "ratio_limit 1.5|--ratio_limit: must be in (0, 0.99999], got 1.5" "steps 0|--steps: must be in [1, 1000000000000], got 0" \
  "steps -5|--steps: must be in [1, 1000000000000], got -5" "threads -1|--threads: must be in [0, 1024] (0 = one per core), got -1" \
  "decay_iter -1|--decay_iter: must be 0 or more, got -1" "lr nan|--lr: must be positive and finite, got nan" \
  "lr 0|--lr: must be positive and finite, got 0" "beta1 1|--beta1: must be in [0, 1), got 1" \
  "beta2 -0.5|--beta2: must be in [0, 1), got -0.5" "adam_eps 0|--adam_eps: must be positive and finite, got 0" \
  "batch_size 1000000000000|--batch_size: must be in [1, 65536], got 1000000000000" \
  "batch_size 0|--batch_size: must be in [1, 65536], got 0" "boundary_prob nan|--boundary_prob: must be in [0, 1), got nan" \
  "t_upper inf|--t_upper: must be finite and above --t_lower (0.002), got inf" \
  "transition_t nan|--transition_t: must be positive and finite, got nan" "c -1|--c: must be 0 or more and finite, got -1" \
  "df inf|--df: must be positive and finite, got inf" "w_boundary nan|--w_boundary: must be 0 or more and finite, got nan"; do
  read -r flag value <<< "${case%%|*}"
  expect_error "tcm-train: ${case#*|}" "$train" consistency --"$flag" "$value" --init "$TMP/ct/model" --out "$TMP/never"
done
check '[[ ! -e "$TMP/never" ]]' "refused flags create no run directory"
# IDX files: only regular ones, and never more data than the file holds.
expect_error "tcm-train: /dev/zero: not a regular file" \
  "$train" diffusion --config "$TMP/tiny.pbtxt" --out "$TMP/x-idx" --data idx:/dev/zero,/dev/zero "${common[@]}"
printf '\0\0\x08\x04\0\0\0\x01\0\x01\0\0\x01\0\0\0\x01\0\0\0' > "$TMP/overflow.idx"
expect_error "tcm-train: $TMP/overflow.idx: header's dimensions 1x65536x16777216x16777216 promise more bytes of data than 2^63, file holds 0" \
  "$train" diffusion --config "$TMP/tiny.pbtxt" --out "$TMP/x-idx" --data "idx:$TMP/overflow.idx,$TMP/overflow.idx" "${common[@]}"
# A damaged checkpoint is one line naming it, and is not resumed from.
cp -r "$TMP/edm" "$TMP/edm-cut"
head -c 100000 "$TMP/edm/checkpoint.pt" > "$TMP/edm-cut/checkpoint.pt"
expect_error "tcm-train: $TMP/edm-cut/checkpoint.pt: cannot resume from this checkpoint: not a whole zip archive (no end of central directory)" \
  "$train" diffusion --config "$TMP/tiny.pbtxt" --out "$TMP/edm-cut" --steps 4 --resume "${common[@]}"
# A full disk while the checkpoint is written (its temporary file is /dev/full): one line naming it,
# exit 1, no temporary file, the previous checkpoint intact.
ln -s /dev/full "$TMP/edm/checkpoint.pt.tmp"
out="$("$train" diffusion --config "$TMP/tiny.pbtxt" --out "$TMP/edm" --steps 4 --resume "${common[@]}" 2>&1 > /dev/null)"
rc=$?
check '[[ $rc -eq 1 && "$out" == "tcm-train: $TMP/edm/checkpoint.pt: writing the checkpoint failed: No space left on device" ]]' \
  "a failed checkpoint write is one line and exit 1 (exit $rc: $out)"
check '[[ ! -e "$TMP/edm/checkpoint.pt.tmp" && ! -L "$TMP/edm/checkpoint.pt.tmp" ]]' "a failed checkpoint write leaves no temporary file"
# --resume compares the contents of --config, not only its path.
cp "$TMP/tiny.pbtxt" "$TMP/tiny-edit.pbtxt"
"$train" diffusion --config "$TMP/tiny-edit.pbtxt" --out "$TMP/edm-edit" --steps 1 "${common[@]}" > "$TMP/edm-edit.log" 2>&1 \
  || { echo "FAIL: diffusion --config tiny-edit.pbtxt"; cat "$TMP/edm-edit.log"; exit 1; }
echo "# edited" >> "$TMP/tiny-edit.pbtxt"
expect_error "--resume: $TMP/edm-edit was begun with other settings ($TMP/edm-edit/settings.json): --config: the contents of $TMP/tiny-edit.pbtxt changed since the run began (fnv1a64:" \
  "$train" diffusion --config "$TMP/tiny-edit.pbtxt" --out "$TMP/edm-edit" --steps 2 --resume "${common[@]}"
# ... and the contents of --teacher's model directory.
cp -r "$TMP/ct/model" "$TMP/teacher-copy"
"$train" truncated --init "$TMP/ct/model" --teacher "$TMP/teacher-copy" --t_lower 1 --boundary_prob 0.25 \
  --mid_t_candidates "" --out "$TMP/tcm-teacher" --steps 1 "${common[@]}" > "$TMP/tcm-teacher.log" 2>&1 \
  || { echo "FAIL: truncated --teacher teacher-copy"; cat "$TMP/tcm-teacher.log"; exit 1; }
cp "$TMP/edm/model/weights.safetensors" "$TMP/teacher-copy/weights.safetensors"
expect_error "--resume: $TMP/tcm-teacher was begun with other settings ($TMP/tcm-teacher/settings.json): --teacher: the contents of $TMP/teacher-copy changed since the run began (fnv1a64:" \
  "$train" truncated --init "$TMP/ct/model" --teacher "$TMP/teacher-copy" --t_lower 1 --boundary_prob 0.25 \
  --mid_t_candidates "" --out "$TMP/tcm-teacher" --steps 2 --resume "${common[@]}"
# ... and the contents of --init's model directory.
cp -r "$TMP/ct/model" "$TMP/init-copy"
"$train" consistency --init "$TMP/init-copy" --mid_t_candidates "" --out "$TMP/ct-init" --steps 1 "${common[@]}" \
  > "$TMP/ct-init.log" 2>&1 || { echo "FAIL: consistency --init init-copy"; cat "$TMP/ct-init.log"; exit 1; }
cp "$TMP/edm/model/weights.safetensors" "$TMP/init-copy/weights.safetensors"
expect_error "--resume: $TMP/ct-init was begun with other settings ($TMP/ct-init/settings.json): --init: the contents of $TMP/init-copy changed since the run began (fnv1a64:" \
  "$train" consistency --init "$TMP/init-copy" --mid_t_candidates "" --out "$TMP/ct-init" --steps 2 --resume "${common[@]}"
# A run recorded before init_digest and data_digest existed resumes, and adopts them.
"$train" consistency --init "$TMP/ct/model" --mid_t_candidates "" --out "$TMP/ct-adopt" --steps 1 "${common[@]}" \
  > "$TMP/ct-adopt.log" 2>&1 || { echo "FAIL: consistency ct-adopt"; cat "$TMP/ct-adopt.log"; exit 1; }
jq 'del(.init_digest, .data_digest)' "$TMP/ct-adopt/settings.json" > "$TMP/ct-adopt/settings.old" \
  && mv "$TMP/ct-adopt/settings.old" "$TMP/ct-adopt/settings.json"
"$train" consistency --init "$TMP/ct/model" --mid_t_candidates "" --out "$TMP/ct-adopt" --steps 2 --resume "${common[@]}" \
  >> "$TMP/ct-adopt.log" 2>&1
rc=$?
check '[[ $rc -eq 0 ]] && [[ "$(jq -r "[.init_digest, .data_digest] | map(length > 0) | all" "$TMP/ct-adopt/settings.json")" == true ]]' \
  "a run recorded before the init and data digests resumes and records them ($(tail -1 "$TMP/ct-adopt.log"))"
# ... and the contents of --data's files: 200 random 8x8 images, classes i % 10.
python3 -c 'import os, sys
n = 200
open(sys.argv[1], "wb").write(bytes([0, 0, 8, 3]) + n.to_bytes(4, "big") + (8).to_bytes(4, "big") * 2 + os.urandom(n * 64))
open(sys.argv[2], "wb").write(bytes([0, 0, 8, 1]) + n.to_bytes(4, "big") + bytes(i % 10 for i in range(n)))' \
  "$TMP/small-images" "$TMP/small-labels"
small=(--data "idx:$TMP/small-images,$TMP/small-labels" --mid_t_candidates "" --out "$TMP/ct-data")
"$train" consistency --init "$TMP/ct/model" "${small[@]}" --steps 1 "${common[@]}" > "$TMP/ct-data.log" 2>&1 \
  || { echo "FAIL: consistency --data idx:"; cat "$TMP/ct-data.log"; exit 1; }
check 'grep -q "\"data_digest\": \"fnv1a64:[0-9a-f]\{16\} fnv1a64:[0-9a-f]\{16\}\"" "$TMP/ct-data/settings.json"' \
  "settings.json records a digest of each --data file"
printf '\xff' | dd of="$TMP/small-images" bs=1 seek=100 conv=notrunc status=none
expect_error "--data: the contents of idx:$TMP/small-images,$TMP/small-labels changed since the run began (fnv1a64:" \
  "$train" consistency --init "$TMP/ct/model" "${small[@]}" --steps 2 --resume "${common[@]}"
# A run file that is not a regular file is refused by name (a directory used to throw from deep inside).
cp -r "$TMP/ct-init" "$TMP/ct-dir" && rm "$TMP/ct-dir/settings.json" && mkdir "$TMP/ct-dir/settings.json"
expect_error "tcm-train: $TMP/ct-dir/settings.json: not a regular file" \
  "$train" consistency --init "$TMP/init-copy" --mid_t_candidates "" --out "$TMP/ct-dir" --steps 2 --resume "${common[@]}"
# Stage 2's teacher is checked against --init's network before anything is written, not at the export.
sed 's/model_channels: 8/model_channels: 16/' "$TMP/tiny.pbtxt" > "$TMP/tiny16.pbtxt"
"$train" diffusion --config "$TMP/tiny16.pbtxt" --out "$TMP/edm16" --steps 1 "${common[@]}" > "$TMP/edm16.log" 2>&1 \
  || { echo "FAIL: diffusion --config tiny16.pbtxt"; cat "$TMP/edm16.log"; exit 1; }
stage2=(truncated --init "$TMP/ct/model" --t_lower 1 --boundary_prob 0.25 --out "$TMP/never2" "${common[@]}")
expect_error "tcm-train: --teacher: $TMP/edm16/model holds another network than --init's (model_channels: --init's 8, --teacher's 16); stage 2 is composed with a teacher of the same network" \
  "$train" "${stage2[@]}" --teacher "$TMP/edm16/model"
expect_error "tcm-train: --teacher: $TMP/tcm/model-composed is a composed model (transition_t is set)" \
  "$train" "${stage2[@]}" --teacher "$TMP/tcm/model-composed"
expect_error "tcm-train: --boundary_prob: 0.05 of --batch_size 4 places no image at t' (need boundary_prob x batch_size >= 1, or 0 for no boundary loss)" \
  "$train" "${stage2[@]}" --teacher "$TMP/ct/model" --boundary_prob 0.05
expect_error "tcm-train: --t_upper (2) must be at least the model's t_max (80), where 1-step sampling starts" \
  "$train" consistency --init "$TMP/edm/model" --t_upper 2 --out "$TMP/never2" "${common[@]}"
# t' and the mid_t candidates are written as float32: each must be inside (0, t_max) as one.
expect_error "tcm-train: --transition_t: must be in (0, t_max = 80), got 85" \
  "$train" "${stage2[@]}" --teacher "$TMP/ct/model" --transition_t 85 --t_lower 85 --t_upper 90
expect_error "tcm-train: --transition_t: must be in (0, t_max = 80), got 79.9999999 (80 as a float32)" \
  "$train" "${stage2[@]}" --teacher "$TMP/ct/model" --transition_t 79.9999999 --t_lower 79.9999999 --t_upper 90
expect_error "tcm-train: --mid_t_candidates: each value must be in (0, t_max = 80), got 79.9999999 (80 as a float32)" \
  "$train" consistency --init "$TMP/edm/model" --mid_t_candidates 5,79.9999999 --out "$TMP/never2" "${common[@]}"
expect_error "tcm-train: --mid_t_candidates: each value must be in (0, t_max = 80), got 1e-50 (0 as a float32)" \
  "$train" consistency --init "$TMP/edm/model" --mid_t_candidates 1e-50 --out "$TMP/never2" "${common[@]}"
expect_error 'tcm-train: --mid_t_candidates: 5.0000001 is named twice (as a float32)' \
  "$train" consistency --init "$TMP/edm/model" --mid_t_candidates 2,5,5.0000001 --out "$TMP/never2" "${common[@]}"
expect_error 'tcm-train: --mid_t_candidates: 2 is named twice (as a float32)' \
  "$train" consistency --init "$TMP/edm/model" --mid_t_candidates 2,5,2 --out "$TMP/never2" "${common[@]}"
expect_error "tcm-train: --ema_gamma_candidates: 16.97 is --ema_gamma's, which is scored anyway; name the others" \
  "$train" consistency --init "$TMP/edm/model" --ema_type power --ema_gamma 16.97 --ema_gamma_candidates 6.94,16.97 \
  --out "$TMP/never2" "${common[@]}"
expect_error "tcm-train: --ema_gamma_candidates: each gamma must be positive and finite, got inf" \
  "$train" consistency --init "$TMP/edm/model" --ema_type power --ema_gamma_candidates inf --out "$TMP/never2" "${common[@]}"
expect_error "tcm-train: --selection_samples: must be in [2, 1000000], got 1000001" \
  "$train" consistency --init "$TMP/edm/model" --selection_samples 1000001 --out "$TMP/never2" --threads 1
check '[[ ! -e "$TMP/never2" ]]' "refused inputs create no run directory"
: > "$TMP/a-file"
expect_error "tcm-train: --out: cannot make the run directory $TMP/a-file: Not a directory" \
  "$train" consistency --init "$TMP/edm/model" --out "$TMP/a-file" "${common[@]}"
# A resume that fails (here: another network than the checkpoint's) records no settings for the run.
cp -r "$TMP/edm" "$TMP/edm-unrecorded"
rm -f "$TMP/edm-unrecorded/settings.json" "$TMP/edm-unrecorded/checkpoint.pt.tmp"
"$train" diffusion --config "$TMP/tiny16.pbtxt" --out "$TMP/edm-unrecorded" --steps 4 --resume "${common[@]}" \
  > "$TMP/edm-unrecorded.log" 2>&1
rc=$?
check '[[ $rc -eq 2 ]] && grep -q "^tcm-train: .*checkpoint.pt: weight .* has shape " "$TMP/edm-unrecorded.log" && [[ ! -e "$TMP/edm-unrecorded/settings.json" ]]' \
  "a failed resume records no settings (exit $rc, $(tr '\n' ' ' < "$TMP/edm-unrecorded.log"))"
one_pixel_png() {  # one_pixel_png VALUE > FILE: a 1x1 grey PNG of that value
  python3 -c 'import struct, sys, zlib
chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
sys.stdout.buffer.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
                        + chunk(b"IDAT", zlib.compress(bytes([0, int(sys.argv[1])]))) + chunk(b"IEND", b""))' "$1"
}
folder_train() {  # folder_train OUT DIR FLAGS...: the diffusion stage on folder:DIR
  local out="$1" dir="$2"
  shift 2
  "$train" diffusion --config "$TMP/tiny.pbtxt" --out "$out" --data "folder:$dir" --validation_images 0 \
    --threads 1 --batch_size 4 --classifier "$classifier" "$@"
}
# A folder run begun when folders were read class after class (no folder_order recorded) is not
# resumed with another held-out split.
mkdir -p "$TMP/folder-run"
cp "$TMP/edm/checkpoint.pt" "$TMP/folder-run/"
jq '.data = "folder:'"$TMP"'/pngs" | del(.folder_order)' "$TMP/edm/settings.json" > "$TMP/folder-run/settings.json"
mkdir -p "$TMP/pngs/a"
one_pixel_png 128 > "$TMP/pngs/a/0.png"
folder_rules="classes in turn, hidden entries skipped, .png in any case"
expect_error "--resume: $TMP/folder-run began when folder:$TMP/pngs was read class after class; this tcm-train reads it $folder_rules" \
  folder_train "$TMP/folder-run" "$TMP/pngs" --steps 4 --resume
# ... nor one begun under the earlier rules (hidden folders were classes, only lower-case .png read).
jq '.data = "folder:'"$TMP"'/pngs" | .folder_order = "classes in turn"' "$TMP/edm/settings.json" > "$TMP/folder-run/settings.json"
expect_error "--resume: $TMP/folder-run began when folder:$TMP/pngs was read by other rules (classes in turn); this tcm-train reads it $folder_rules" \
  folder_train "$TMP/folder-run" "$TMP/pngs" --steps 4 --resume
# A folder run records one digest of its PNGs' names and contents (checked against
# PATTERN), and is not resumed once one changed.
new_folder_run() {  # new_folder_run OUT DIR PATTERN
  local run="$1" dir="$2" pattern="$3"
  folder_train "$run" "$dir" --steps 1 > "$run.log" 2>&1 || { echo "FAIL: diffusion --data folder:$dir"; cat "$run.log"; exit 1; }
  check 'jq -e ".data_digest | test(\"^$pattern\$\")" "$run/settings.json" > /dev/null' \
    "the folder run $run records data_digest $pattern ($(jq -c .data_digest "$run/settings.json"))"
}
mkdir -p "$TMP/pngs3/a" "$TMP/pngs3/b"
for f in a/0 a/1 b/0 b/1; do one_pixel_png 128 > "$TMP/pngs3/$f.png"; done
new_folder_run "$TMP/folder-digest" "$TMP/pngs3" "4 files fnv1a64:[0-9a-f]{16}"
one_pixel_png 64 > "$TMP/pngs3/b/1.png"
expect_error "--data: the contents of folder:$TMP/pngs3 changed since the run began (4 files fnv1a64:" \
  folder_train "$TMP/folder-digest" "$TMP/pngs3" --steps 2 --resume
one_pixel_png 128 > "$TMP/pngs3/b/1.png"
one_pixel_png 128 > "$TMP/pngs3/b/2.png"
expect_error ", now 5 files fnv1a64:" folder_train "$TMP/folder-digest" "$TMP/pngs3" --steps 2 --resume
rm "$TMP/pngs3/b/2.png"
folder_train "$TMP/folder-digest" "$TMP/pngs3" --steps 2 --resume >> "$TMP/folder-digest.log" 2>&1
rc=$?
check '[[ $rc -eq 0 ]]' "a folder run whose PNGs are as they were resumes (exit $rc, $(tail -1 "$TMP/folder-digest.log"))"
# ... a folder of one PNG too: renamed, it is another data set.
mkdir -p "$TMP/pngs1/a" && one_pixel_png 128 > "$TMP/pngs1/a/0.png"
new_folder_run "$TMP/folder-one" "$TMP/pngs1" "1 file fnv1a64:[0-9a-f]{16}"
mv "$TMP/pngs1/a/0.png" "$TMP/pngs1/a/1.png"
expect_error "--data: the contents of folder:$TMP/pngs1 changed since the run began (1 file fnv1a64:" \
  folder_train "$TMP/folder-one" "$TMP/pngs1" --steps 2 --resume
check '[[ $(cat "$TMP/edm/checkpoint.pt" | md5sum) == "$edm_checkpoint_sum" ]]' "refused runs leave the checkpoint alone"
exit $fail
