#!/usr/bin/env bash
# Regenerates results/exports.{csv,md} and results/bench.{csv,md}: exports the uniform w8a8 baseline
# and the searched SST-2 models to exports/<name>/ (dev parity check included), then times them
# side by side with PyTorch fp32, ORT fp32 and ORT int8 (quantize_dynamic) on ${THREADS:-1} thread(s).
set -euo pipefail
export AMQS_GLUE_DIR="${AMQS_GLUE_DIR:-../shared/data/glue}"
RUNS="${RUNS:-sst2-w8a8 sst2-w4a8 sst2-w2a8 sst2-default-compression16.2 sst2-aqbert-compression16.2 sst2-default-compression13.0 sst2-default-compression10.8}"
models=()
for r in $RUNS; do
  if [ -d "results/runs/$r" ]; then
    amqs-export "results/runs/$r" --out "exports/$r" --threads "${THREADS:-1}" --results results
    models+=(--model "$r=exports/$r")
  else
    echo "skipping $r: results/runs/$r does not exist" >&2
  fi
done
python -m amqs.report.tables results/exports.csv --title "Exported models: size on disk and dev parity"
if [ "${BENCH:-1}" = 1 ]; then
  amqs-bench --fp32-run results/runs/sst2-fp32 "${models[@]}" --threads "${THREADS:-1}" --rounds "${ROUNDS:-30}" --eval --out results
fi
