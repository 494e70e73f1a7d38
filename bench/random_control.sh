#!/usr/bin/env bash
# Random control of a searched assignment: the same bit-widths per matrix (so exactly the same bytes), permuted
# at random among each matrix's subgroups (amqs.quant.shuffle_bits), retrained exactly like the search's own
# retrain (amqs-qat assignment=..., same teacher, data, epochs and loss). If the search learned which subgroups
# matter, the searched row beats its controls. Rows: results/baselines.csv, method shuffled<seed>-<run name>.
#   RUN=results/runs/sst2-default-compression13.0 SEEDS="0 1" AMQS_EXTRA=train.num_threads=1 bash bench/random_control.sh
set -euo pipefail
export AMQS_GLUE_DIR="${AMQS_GLUE_DIR:-../shared/data/glue}"
RUN="${RUN:-results/runs/sst2-default-compression13.0}"
name="$(basename "$RUN")"
# The retrain's settings: the search's config (teacher, data, train, distill), read from its config.yaml.
read -r TASK TEACHER MAXN EPOCHS DISTILL < <(python - "$RUN" <<'PY'
import sys, yaml
from amqs.config import DistillConfig
from amqs.train.distill import distill_label
c = yaml.safe_load(open(f"{sys.argv[1]}/config.yaml"))
n = c["data"]["max_train_examples"]
print(c["data"]["task"], c["teacher"]["source"], "null" if n is None else n, c["train"]["epochs"],
      distill_label(DistillConfig(**c["distill"])))
PY
)
mkdir -p results/controls
for seed in ${SEEDS:-0}; do
  out="results/controls/${name}-shuffled${seed}.json"
  python -c "from amqs.quant import BitAssignment, shuffle_bits; shuffle_bits(BitAssignment.from_json('$RUN/bits.json'), seed=$seed).to_json('$out')"
  amqs-qat assignment="$out" quant.name="shuffled${seed}-${name#*-}" data="$TASK" teacher.source="$TEACHER" \
    data.max_train_examples="$MAXN" train.epochs="$EPOCHS" distill="$DISTILL" ${AMQS_EXTRA:-}
done
