#!/usr/bin/env bash
# Regenerates results/teachers.csv: the fp32 teachers of the default model (2 CPU cores: ~25 + ~15 min).
# Resumable: run it again after a kill and each run continues from its checkpoint.
set -euo pipefail
export AMQS_GLUE_DIR="${AMQS_GLUE_DIR:-../shared/data/glue}"
amqs-finetune experiment=sst2_teacher paths.results_dir=results train.precision=fp32 train.fused_optimizer=false
amqs-finetune experiment=mrpc_teacher paths.results_dir=results train.precision=fp32 train.fused_optimizer=false
