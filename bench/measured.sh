# Sourced by bench/*.sh: the measured tables live in results/ (every command defaults to the git-ignored
# outputs/), under the run names they were recorded with (before run names carried the model), trained in fp32
# with the default AdamW, as they were (conf/train now says precision=auto, fused_optimizer=true: other configs).
export AMQS_GLUE_DIR="${AMQS_GLUE_DIR:-../shared/data/glue}"
MEASURED="paths.results_dir=results train.precision=fp32 train.fused_optimizer=false"
QAT_NAME='name=${data.task}-${quant.name}'
SEARCH_NAME='name=${data.task}-${search.space}-${budget.kind}${budget.value}'
# ... and their searches moved the architecture at every step (conf/search now says search.arch.every=4).
# ... and searched with AQ-BERT's schedule and size loss (conf/search now commits: docs/search.md).
SEARCH_MEASURED="search.arch.every=1 search.arch.lr=0.05 search.t_final=null search.hard_from=null search.entropy_weight=0 search.size_on=argmax search.prior=none"
