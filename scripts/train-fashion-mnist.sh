#!/usr/bin/env bash
# The whole TCM recipe on Fashion-MNIST, as run for the embedded models
# (docs/TRAINING.md): diffusion pre-training, stage-1 consistency training,
# stage-2 truncated training. Resumable: a stage whose model/ exists is
# skipped, a stage with a checkpoint continues from it. Run it in the
# background and follow RUN_DIR/*.log:
#
#   nohup env THREADS=2 scripts/train-fashion-mnist.sh runs/fashion > /dev/null 2>&1 &
#
# Then copy RUN_DIR/ct/model to models/fashion-mnist-ct and RUN_DIR/tcm/model to
# models/fashion-mnist-tcm (docs/TRAINING.md, "The recipe"): each carries
# the EMA and mid_t tcm-train chose on the 5000 training images every stage
# holds out (RUN_DIR/*/selection.json). Every stage runs in bf16 where the CPU
# has native bf16 (--precision auto), the consistency stages only while their
# gap ratio is at most 0.985 (float32 beyond). THREADS (default 1) sets the intra-op threads;
# give it the machine's cores only when nothing else runs: oversubscribed
# OpenMP threads slow training several-fold.
set -euo pipefail
run="${1:?usage: train-fashion-mnist.sh RUN_DIR}"
bin="${TCM_BIN:-build/bin}"
threads="${THREADS:-1}"
mkdir -p "$run"

# stage NAME DIR FLAGS...: runs one stage unless its model exists; resumes a checkpoint.
stage() {
  local name="$1" dir="$2"
  shift 2
  if [[ -f "$dir/model/weights.safetensors" ]]; then
    echo "$name: $dir/model exists, skipped"
    return
  fi
  local resume=()
  [[ -f "$dir/checkpoint.pt" ]] && resume=(--resume)
  "$bin/tcm-train" "$name" --out "$dir" --threads "$threads" --log_every 20 --checkpoint_every 100 \
    "${resume[@]}" "$@" >> "$dir.log" 2>&1
}

# Every stage: batch 64, Adam with beta2 0.99 and a power-function EMA (EDM2's
# choices, which suit short runs; the reference's defaults are 0.999 and a
# constant 0.9999).
common=(--batch_size 64 --beta2 0.99 --ema_type power --ema_gamma 16.97)

# Diffusion pre-training (EDM loss), from random weights: 8000 x 64 images.
stage diffusion "$run/edm" --config tools/configs/edm2-fashion-mnist.pbtxt "${common[@]}" \
  --steps 8000 --lr 2.4e-2 --decay_iter 400

# The consistency stages choose among three EMA lengths (sigma_rel 0.10, 0.05
# and 0.023) on the held-out images, and score their EMA at 1 step on them
# every 500 steps while they train (RUN_DIR/*/eval.jsonl; the training is the
# same without).
held_out_scoring=(--ema_gamma_candidates 6.94,40 --eval_every 500)

# Stage 1: consistency training over [0.002, 80] from the diffusion weights
# (the reference's defaults: log t ~ N(-1.1, 2.0), default weighting, q = 2),
# the gap halved every 500 steps (stage 5 at the end: all of it in bf16).
stage consistency "$run/ct" --init "$run/edm/model" "${common[@]}" "${held_out_scoring[@]}" \
  --steps 3000 --lr 1e-3 --decay_iter 2000 --dropout 0.1 -c 1e-8 --double_every 500

# Stage 2: truncated training over [t' = 1, 80] from stage 1, stage 1 frozen
# below t', the reference's stage-2 time distribution (Student-t, df 0.01,
# around log t = 0) and boundary loss (25% of each batch, weight 0.1); the gap
# schedule continues from stage 5 at the same pace (float32 from step 500;
# the ratio reaches its floor, 0.996, at step 1000 and stays there).
stage truncated "$run/tcm" --init "$run/ct/model" --teacher "$run/ct/model" "${common[@]}" "${held_out_scoring[@]}" \
  --t_lower 1 --transition_t 1 --mean 0 --std 0.2 --tdist t --df 0.01 \
  --boundary_prob 0.25 --w_boundary 0.1 --ratio_limit 0.996 \
  --steps 4500 --lr 5e-4 --decay_iter 2000 --dropout 0.1 -c 1e-8 --double_every 500 --start_stage 5
echo "done: $run/ct/model (stage 1), $run/tcm/model and $run/tcm/model-composed (stage 2)"
