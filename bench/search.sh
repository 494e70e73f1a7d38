#!/usr/bin/env bash
# Regenerates results/search.{csv,md}: SST-2, default model, default space {prune,2,4,8}, at encoder
# compression 16.2x, 13x and 10.8x. Each run: supernet search for 0.5 epoch over the same 16,000
# train examples the baselines use (architecture on the search-validation split), derive + repair,
# then retrain 1 epoch over those 16,000 examples (the baselines' budget), from the shared fp32
# SST-2 teacher (../shared/models/minilm-l6-sst2) with logit distillation. Resumable.
set -euo pipefail
source "$(dirname "$0")/measured.sh"
BUDGET="teacher=shared_sst2 data.max_train_examples=16000 search.epochs=0.5 train.epochs=1 ${AMQS_EXTRA:-}"
for b in ${BUDGETS:-c16_2 c13 c10_8}; do
  amqs-search budget=$b "$SEARCH_NAME" $MEASURED $SEARCH_MEASURED $BUDGET
done
# The ternary space (search_spaces/ternary.yaml: removable heads / FFN blocks, TWN 2-bit) with hidden-state
# distillation, TernaryBERT's quantizer and loss, at TernaryBERT's size.
for b in ${TERNARY_BUDGETS:-c16_2}; do
  amqs-search search.space=ternary distill=hidden budget=$b "$SEARCH_NAME" $MEASURED $SEARCH_MEASURED $BUDGET
done
python -m amqs.report.search results
