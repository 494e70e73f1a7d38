#!/usr/bin/env bash
# The fair comparison (results/compare.{csv,md,png}): every method allocates the same encoder budget, then trains
# with the same trainer -- the same teacher (teacher=auto: ../shared/models/minilm-l6-<task>-heldout, which never
# saw the search-validation rows the search and hawq select on) and data, distillation of logits and hidden
# states, bf16, the lkd
# start, 1 thread; SST-2: 16,000 train examples, 1 retrain epoch (the searches spend 0.5 epoch more on the
# search); MRPC: its whole train split, 3 epochs (search 1 epoch) -- at seeds 42 and 43 (train.seed). Methods:
#   search          amqs-search, conf/search/default.yaml          search-ternary  the same in search_spaces/ternary
#   search-b05      the search with the HAWQ prior's bias at 0.5 (search.init_bias): at 2 it keeps HAWQ's allocation
#   hawq            amqs-search recipe=hawq (sensitivity + ILP)    random          the search's bits shuffled per matrix
#   w4a8 / w2a8     the uniform model nearest in size              qbert           Q-BERT's per-layer bits (13x)
#   ternarybert / binarybert  the ~15x recipes (16.2x block)
#
#   bash bench/compare.sh list                        # the grid: TASK BUDGET METHOD SEED, one job a line
#   bash bench/compare.sh run sst2 13 hawq 42         # one job (resumable; a finished one is reused) + its row
#   bash bench/compare.sh render                      # compare.md and compare.png from compare.csv
# AMQS_COMPARE_RESULTS=<folder> runs the jobs elsewhere (e.g. a worktree's results/); `add` its run folders later.
set -euo pipefail
shopt -s inherit_errexit  # a failed training inside $(job ...) stops the script instead of recording a stale run
source "$(dirname "$0")/measured.sh"
RESULTS=${AMQS_COMPARE_RESULTS:-results}
SEEDS=${AMQS_COMPARE_SEEDS:-"42 43"}
TRAIN="paths.results_dir=$RESULTS distill=hidden train.precision=bf16 train.fused_optimizer=false train.init=lkd train.num_threads=1 train.progress=false"

data() {  # TASK -> the task's data, teacher and epochs
  case $1 in
    sst2) echo "teacher=auto data.max_train_examples=16000 train.epochs=1 search.epochs=0.5" ;;
    mrpc) echo "data=mrpc teacher=auto train.epochs=3 search.epochs=1" ;;
  esac
}
budget() { case $1 in 10.8) echo c10_8 ;; 13) echo c13 ;; 16.2) echo c16_2 ;; esac; }

grid() {
  for seed in $SEEDS; do
    for b in 10.8 13 16.2; do
      for m in search search-ternary hawq random; do echo "sst2 $b $m $seed"; done
    done
    echo "sst2 10.8 w4a8 $seed"; echo "sst2 13 w2a8 $seed"; echo "sst2 13 qbert $seed"; echo "sst2 16.2 w2a8 $seed"
    echo "sst2 13 search-b05 $seed"
    echo "sst2 16.2 ternarybert $seed"; echo "sst2 16.2 binarybert $seed"
    for m in search hawq ternarybert; do echo "mrpc 16.2 $m $seed"; done
  done
}

# run TASK BUDGET METHOD SEED: train the job (or reuse it) and print its run folder on the last line
job() {
  local task=$1 b=$2 m=$3 seed=$4 search_d qat_d
  search_d=$(data "$task")
  qat_d=${search_d% search.epochs=*}  # amqs-qat has no search settings
  local tag="cmp-$task-c$b" common="budget=$(budget "$b") train.seed=$seed"
  case $m in
    search) amqs-search $search_d $common $TRAIN "name=$tag-search-s$seed" >&2 && echo "$RESULTS/runs/$tag-search-s$seed" ;;
    search-b05) amqs-search search.init_bias=0.5 $search_d $common $TRAIN "name=$tag-search-b05-s$seed" >&2 &&
                echo "$RESULTS/runs/$tag-search-b05-s$seed" ;;
    search-ternary) amqs-search search.space=ternary $search_d $common $TRAIN "name=$tag-search-ternary-s$seed" >&2 &&
                    echo "$RESULTS/runs/$tag-search-ternary-s$seed" ;;
    hawq) amqs-search recipe=hawq $search_d $common $TRAIN "name=$tag-hawq-s$seed" >&2 && echo "$RESULTS/runs/$tag-hawq-s$seed" ;;
    random) local run="$RESULTS/runs/$tag-search-s$seed"
            [ -f "$run/metrics.json" ] || job "$task" "$b" search "$seed" > /dev/null
            python -m amqs.search.control "$run" --seeds "$seed" --results "$RESULTS" >&2 &&
            echo "$RESULTS/runs/$tag-search-s$seed/control-shuffled$seed" ;;
    w4a8|w2a8) amqs-qat quant=$m $qat_d train.seed=$seed $TRAIN "name=cmp-$task-$m-s$seed" >&2 && echo "$RESULTS/runs/cmp-$task-$m-s$seed" ;;
    qbert) amqs-qat recipe=qbert $qat_d $common $TRAIN "name=$tag-qbert-s$seed" >&2 && echo "$RESULTS/runs/$tag-qbert-s$seed" ;;
    ternarybert|binarybert) amqs-qat recipe=$m $qat_d train.seed=$seed $TRAIN "name=cmp-$task-$m-s$seed" >&2 &&
                            echo "$RESULTS/runs/cmp-$task-$m-s$seed" ;;
    *) echo "unknown method $m" >&2; return 2 ;;
  esac
}

case ${1:-} in
  list) grid ;;
  run) shift; run=$(job "$@")
       python -m amqs.report.compare add "$run" --method "$3" --budget "$2" --seed "$4" --results "$RESULTS" ;;
  render) python -m amqs.report.compare render --results "$RESULTS" ;;
  *) sed -n 2,16p "$0"; exit 2 ;;
esac
