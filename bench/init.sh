#!/usr/bin/env bash
# Regenerates results/init.{csv,md}: the round-to-nearest start (train.init=rtn) against the reconstruction start
# (train.init=lkd, amqs/train/reconstruct.py) for four assignments, each followed by the standard QAT budget
# (1 epoch over the same 16,000 train examples, batch 32, lr 2e-5, distillation from the shared SST-2 teacher).
# Every run trains in bf16 with the default AdamW loop, on 1 thread. Resumable: rerun after a kill.
set -euo pipefail
source "$(dirname "$0")/measured.sh"
SETTINGS="paths.results_dir=results teacher=shared_sst2 data.max_train_examples=16000 train.epochs=1 train.num_threads=1 train.precision=bf16 train.fused_optimizer=false ${AMQS_EXTRA:-}"
SEARCHED=results/runs/sst2-ternary-compression16.2/bits.json  # the 16.2x ternary-space search (16.6x derived)
while read -r name overrides; do
  for init in rtn lkd; do
    suffix=$([ "$init" = lkd ] && echo "-lkd" || true)
    extra=$([ "$init" = lkd ] && echo "train.init=lkd" || true)
    amqs-qat $overrides $extra "quant.name=${name}-bf16${suffix}" "$QAT_NAME" $SETTINGS
  done
done <<LIST
w4a8 quant=w4a8
w2a8 quant=w2a8
ternarybert recipe=ternarybert
ternary-c16.2 assignment=$SEARCHED distill=hidden
LIST
python bench/init_table.py
