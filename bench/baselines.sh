#!/usr/bin/env bash
# Regenerates results/baselines.{csv,md}: the uniform baselines of issue 3 on SST-2 with the default
# model, every row with the same budget (1 epoch over the same 16,000 train examples, batch 32,
# lr 2e-5, logit distillation), all starting from the shared fp32 SST-2 teacher
# (../shared/models/minilm-l6-sst2, dev 0.8933). Resumable: rerun after a kill.
set -euo pipefail
source "$(dirname "$0")/measured.sh"
BUDGET="teacher=shared_sst2 data.max_train_examples=16000 train.epochs=1 ${AMQS_EXTRA:-}"
for q in fp32 w8a8 w4a8 w2a8; do
  amqs-qat quant=$q "$QAT_NAME" $MEASURED $BUDGET
done
python -m amqs.report.tables results/baselines.csv --out results/baselines.md --title "Uniform quantization baselines" \
  --where task=sst2 --where method=fp32,w8a8,w4a8,w2a8 \
  --note "SST-2 dev, default model (MiniLM-L6). Every row starts from the shared fp32 SST-2 teacher (../shared/models/minilm-l6-sst2, dev 89.33) and trains with the same budget: 1 epoch over the same 16,000 examples of the train split (search-validation held out), batch 32, lr 2e-5, CE + logit distillation. Weights: asymmetric min-max per subgroup (128 per matrix, STE); activations: 8-bit EMA ranges; embeddings: 8-bit. encoder_bytes counts the Transformer layers (weights, quantization parameters, biases, LayerNorms, activation ranges), total_bytes adds embeddings, pooler and classifier; compression = fp32 encoder bytes / encoder bytes." \
  --note "Regenerate: bash bench/baselines.sh. The literature recipes' rows of baselines.csv: results/recipes.md (bash bench/recipes.sh)."
