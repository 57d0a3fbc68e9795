#!/usr/bin/env bash
# GPU check: profile.py on CUDA (a 0.9 B Llama shape) and the main job with trainer=gpu.
#   bash scripts/gpu_check.sh OUT_DIR
set -uo pipefail
OUT=${1:-outputs/gpu_check}
mkdir -p "$OUT"
nvidia-smi -L
python3 profile.py device=cuda rounds=3 steps=10 forward_repeats=20 batch_size=8 seq_len=512 \
  scaling.enabled=false profile_model.hidden_size=2048 profile_model.intermediate_size=5632 \
  profile_model.num_hidden_layers=16 profile_model.num_attention_heads=16 \
  profile_model.num_key_value_heads=16 profile_model.vocab_size=32000 \
  hydra.run.dir=/tmp/gpu_profile 2>&1 | grep -v -i warn | tail -40
cp /tmp/gpu_profile/profile.json "$OUT/profile_gpu.json"; cp /tmp/gpu_profile/profile.md "$OUT/profile_gpu.md"
[ -n "${SKIP_MAIN:-}" ] || ( time python3 train.py method=lape lang=af trainer=gpu hydra.run.dir=/tmp/gpu_main ) 2>&1 | grep -v -i warn | tail -12
[ -n "${SKIP_MAIN:-}" ] || cp /tmp/gpu_main/metrics.json "$OUT/metrics_gpu_lape_af.json"
