#!/usr/bin/env bash
# GPU check of the authors' recipe and the 4-bit base, one script (about 10 min on one H100):
#  1. the main job with trainer=gpu model.dtype=bfloat16, for full and lape (embedded model);
#  2. Llama-3.1-8B's shapes (random weights, all 32 layers) under experiment=paper,
#     method=lape, 50 steps of 2 x 512 tokens, on a bf16 base and on an nf4 base: measured
#     peak GPU memory against the dry run's plan, tokens/s of the statistics and of training.
#   bash scripts/gpu_check_paper.sh OUT_DIR        (then: python -m langsub report gpu-check OUT_DIR)
#  3. with a second argument `suite` (about 6 min), only the paper's evaluation suite: the
#     main job on the embedded model perplexity-only vs eval=paper_offline, and on a 1 B-shaped
#     random Llama (16 layers, d 2048) with eval.lm_eval.limit=20: lm_eval_seconds per phase.
#   bash scripts/gpu_check_paper.sh OUT_DIR suite
set -uo pipefail
OUT=${1:-outputs/gpu_check_paper}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi -L
python3 -c "import torch, transformers, bitsandbytes; print('torch', torch.__version__, 'transformers', transformers.__version__, 'bitsandbytes', bitsandbytes.__version__)"
if [ "${2:-}" = suite ]; then
  for e in default paper_offline; do
    s=$(date +%s)
    timeout 200 python3 train.py method=lape lang=af trainer=gpu eval=$e hydra.run.dir="$OUT/suite_$e" \
      > "$OUT/suite_$e.log" 2>&1
    echo "embedded eval=$e wall $(( $(date +%s) - s )) s"
  done
  M1=/tmp/llama1b_random
  [ -d "$M1" ] || timeout 120 python3 scripts/random_model.py llama31_8b "$M1" --set num_hidden_layers=16 \
    hidden_size=2048 intermediate_size=8192 num_attention_heads=32 num_key_value_heads=8
  timeout 300 python3 train.py model=llama31_8b model.path=$M1 trainer=gpu lang=af method=lape \
    train.max_steps=5 data.ident_max_tokens=65536 data.eval_max_tokens=8192 data.eval_langs=[af,en] \
    general=[en] export=false eval=paper_offline eval.lm_eval.limit=20 hydra.run.dir="$OUT/suite_1b" \
    > "$OUT/suite_1b.log" 2>&1
  grep -h "lm_eval_seconds\|train_seconds" "$OUT"/suite_*/metrics.json
  exit 0
fi
for m in full lape; do
  timeout 150 python3 train.py method=$m lang=af trainer=gpu model.dtype=bfloat16 \
    hydra.run.dir="$OUT/main_$m" 2>&1 | grep -A4 "^\[langsub\] $m on"
done
MODEL=/tmp/llama8b_random
[ -d "$MODEL" ] || timeout 240 python3 scripts/random_model.py llama31_8b "$MODEL"
COMMON="model=llama31_8b model.path=$MODEL trainer=gpu lang=af method=lape experiment=paper \
  train.max_steps=50 data.ident_max_tokens=262144 data.eval_max_tokens=8192 \
  data.eval_langs=[af,en] general=[en] export=false"
for q in null nf4; do
  timeout 240 python3 train.py $COMMON model.quantize=$q hydra.run.dir="$OUT/paper_$q" 2>&1 \
    | grep -A4 "^\[langsub\] lape on"
  # the plan for the very neurons that trained
  python3 train.py $COMMON model.quantize=$q method.neurons="$OUT/paper_$q/neurons.json" \
    dry_run=true hydra.run.dir="$OUT/plan_$q" | tail -5
done
PYTHONPATH=src python3 -m langsub report gpu-check "$OUT"
