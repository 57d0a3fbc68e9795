#!/usr/bin/env bash
# GPU check: profile.py on Llama-3.1-8B's shapes (bf16, 16 of 32 layers so that full
# fine-tuning's AdamW state fits 80 GB), then the main job with trainer=gpu.
#   bash scripts/gpu_check.sh OUT_DIR
set -uo pipefail
OUT=${1:-outputs/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi -L
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
timeout "${PROFILE_TIMEOUT:-420}" python3 profile.py device=cuda dtype=bfloat16 \
  profile_model=llama31_8b_shape profile_model.num_hidden_layers=16 \
  methods=[floor,lape,naive,lora,full] rounds=5 steps=5 forward_repeats=10 \
  batch_size=4 seq_len=512 scaling.widths=[] scaling.methods=[lape] scaling.rounds=2 scaling.rhos=[0.01,0.05,0.1,0.2] \
  hydra.run.dir="$OUT/profile" 2>&1 | grep -v -i warn
[ -n "${SKIP_MAIN:-}" ] || ( time timeout "${MAIN_TIMEOUT:-150}" python3 train.py method=lape \
  lang=af trainer=gpu hydra.run.dir=/tmp/gpu_main ) 2>&1 | grep -v -i warn | tail -15
[ -n "${SKIP_MAIN:-}" ] || cp /tmp/gpu_main/metrics.json "$OUT/metrics_gpu_lape_af.json"
