#!/usr/bin/env bash
# GPU check: profile.py (train.py's step) on Llama-3.1-8B's shapes (random weights, bf16, 16 of 32 layers so that full
# fine-tuning's AdamW state fits 80 GB), then the main job with trainer=gpu.
#   bash scripts/gpu_check.sh OUT_DIR
set -uo pipefail
OUT=${1:-outputs/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi -L
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
timeout "${PROFILE_TIMEOUT:-420}" python3 profile.py trainer=gpu \
  model=llama31_8b_shape model.arch.num_hidden_layers=16 \
  profile.methods=[floor,lape,lora,full] profile.rounds=5 profile.steps=5 profile.forward_repeats=10 \
  data.batch_size=4 data.block_size=512 profile.scaling.enabled=true profile.scaling.widths=[] \
  profile.scaling.methods=[lape] profile.scaling.rounds=2 profile.scaling.rhos=[0.01,0.05,0.1,0.2] \
  hydra.run.dir="$OUT/profile" 2>&1 | grep -v -i warn
[ -n "${SKIP_MAIN:-}" ] || ( time timeout "${MAIN_TIMEOUT:-150}" python3 train.py method=lape \
  lang=af trainer=gpu hydra.run.dir=/tmp/gpu_main ) 2>&1 | grep -v -i warn | tail -15
[ -n "${SKIP_MAIN:-}" ] || cp /tmp/gpu_main/metrics.json "$OUT/metrics_gpu_lape_af.json"
