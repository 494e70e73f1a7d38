# Sourced by bench/*.sh: the measured tables live in results/ (every command defaults to the git-ignored
# outputs/), under the run names they were recorded with (before run names carried the model).
export AMQS_GLUE_DIR="${AMQS_GLUE_DIR:-../shared/data/glue}"
RESULTS="paths.results_dir=results"
QAT_NAME='name=${data.task}-${quant.name}'
SEARCH_NAME='name=${data.task}-${search.space}-${budget.kind}${budget.value}'
