#!/usr/bin/env bash
# The literature's recipes (docs/recipes.md) as rows of results/baselines.csv (method = the recipe), next to
# the uniform baselines of bench/baselines.sh and with their budget: SST-2, the default model (MiniLM-L6),
# from the shared fp32 SST-2 teacher (../shared/models/minilm-l6-sst2), 1 epoch over the same 16,000 train
# examples (search-validation held out), batch 32, lr 2e-5. Staged recipes (binarybert, progressive) split
# that one epoch between their stages. AQ-BERT searches 0.5 epoch then retrains 1 epoch (bench/search.sh).
# Then Q8BERT, TernaryBERT and the searched configuration on MRPC from the MRPC teacher
# (results/teachers/minilm-l6-mrpc), 3 epochs. Extra overrides for every run: AMQS_EXTRA="train.num_threads=1 ...".
# Resumable: rerun after a kill (finished runs and stages are reused, a killed one resumes).
set -euo pipefail
source "$(dirname "$0")/measured.sh"
BUDGET="teacher=shared_sst2 data.max_train_examples=16000 train.epochs=1 ${AMQS_EXTRA:-}"
for r in ${RECIPES:-q8bert qbert ternarybert binarybert kdlsq progressive}; do
  amqs-qat recipe=$r "$QAT_NAME" $MEASURED $BUDGET
done
amqs-search recipe=aqbert 'name=${data.task}-recipe-aqbert-${budget.kind}${budget.value}' $MEASURED search.epochs=0.5 $BUDGET      # also a row of results/search.csv
python bench/record_search.py results/runs/sst2-recipe-aqbert-*/

# MRPC: Q8BERT, TernaryBERT and the searched configuration that did best on SST-2 search-val at ~15x (the
# ternary space with hidden-state distillation, bench/search.sh), from the MRPC teacher (its dev in
# results/teachers.csv is the fp32 reference), 3 epochs; the search spends 1 epoch on the supernet first.
MRPC="data=mrpc teacher=finetuned train.epochs=3 ${AMQS_EXTRA:-}"
for r in q8bert ternarybert; do
  amqs-qat recipe=$r "$QAT_NAME" $MEASURED $MRPC
done
amqs-search search.space=ternary distill=hidden budget=c16_2 search.epochs=1 "$SEARCH_NAME" $MEASURED $SEARCH_MEASURED $MRPC
python bench/record_search.py results/runs/mrpc-ternary-compression16.2 --method search-ternary-compression16.2
python bench/record_search.py results/runs/sst2-ternary-compression16.2 --method search-ternary-compression16.2

python -m amqs.report.tables results/baselines.csv --out results/recipes.md \
  --title "Uniform baselines and literature recipes" \
  --note "SST-2 rows: the default model (MiniLM-L6) from the shared fp32 SST-2 teacher (dev 89.33), 1 epoch over the same 16,000 train examples (search-validation held out), batch 32, lr 2e-5; staged recipes (binarybert, progressive) share that epoch between their stages; aqbert searches 0.5 epoch, then retrains 1 epoch. MRPC rows: the MRPC teacher (results/teachers/minilm-l6-mrpc, dev 78.68 / F1 84.82), 3 epochs over the train split (search-validation held out). search-ternary rows: the search in the ternary space with hidden-state distillation at the 16.2x budget (the epochs column gives search + retrain); the SST-2 one is also in results/search.md. Methods and what each approximates: docs/recipes.md. weight_bits of a mixed-precision row is the average per encoder weight; compression = fp32 encoder bytes / encoder bytes." \
  --note "Regenerate: bash bench/baselines.sh && bash bench/recipes.sh"
