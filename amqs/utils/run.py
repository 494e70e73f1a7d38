"""Run bookkeeping shared by every entry point: git revision, config fingerprints, result tables.

Example::

    info = run_info(cfg)               # {"git_revision": "...", "config_hash": "..."}
    upsert_csv(Path("results/teachers.csv"), row, key=("task", "model"), columns=COLUMNS)
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]


# What a run computes with: a change anywhere else (results/, docs) does not make the code "dirty".
CODE_PATHS = ("amqs", "conf", "search_spaces", "pyproject.toml")


@functools.cache
def git_revision() -> str:
    """``<sha>`` of the code amqs runs from, ``<sha>-dirty`` with local changes to it, or ``unknown``.

    Read once per process, at its first call (:func:`prepare_run_dir` makes that the start of every run): a
    commit made while a long run trains must not be recorded as the code it ran.
    """
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS],
                               cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def fingerprint(obj: Any) -> str:
    """A short stable hash of a JSON-able value or an OmegaConf node (resolved)."""
    if isinstance(obj, DictConfig):
        obj = OmegaConf.to_container(obj, resolve=True)
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# Settings that change where or how verbosely a run works, not what it computes.
_NOT_HASHED = ("paths", "overwrite", "device", "name", "eval_search_val", "smoke", "pipeline",
               "assignment")  # an assignment file is fingerprinted by its content (amqs.train.qat)
_TRAIN_NOT_HASHED = ("checkpoint_every", "log_every", "num_threads", "progress", "eval_batch_size")


# amqs.config.HawqConfig's defaults, written out (this module does not import the schemas, nor torch through
# them); tests/search/test_hawq.py checks that the two agree.
_HAWQ_DEFAULTS = {"sensitivity": "fisher", "batches": 8, "probes": 4, "seed": 0, "time_limit": 60.0}


# Keys added after runs were recorded, with the value that means "not used": hashed only when set, so a
# finished run keeps its fingerprint (and is reused) across the addition.
_HASHED_WHEN_SET = {("init_from",): None, ("mixed",): None, ("budget",): None, ("staged",): None,
                    ("quant", "tws"): False, ("train", "precision"): "fp32", ("train", "fused_optimizer"): False,
                    ("search", "arch", "every"): 1, ("search", "method"): "darts",
                    ("search", "hawq"): _HAWQ_DEFAULTS,
                    ("search", "t_final"): None, ("search", "hard_from"): None, ("search", "entropy_weight"): 0.0,
                    ("search", "size_on"): "argmax", ("search", "prior"): "none", ("train", "init"): "rtn",
                    ("budget", "latency_ms"): None, ("search", "latency_table"): None,
                    ("data", "train_file"): None, ("data", "validation_file"): None, ("data", "validation_fraction"): 0.1,
                    ("data", "text_column"): "text", ("data", "text_pair_column"): None, ("data", "label_column"): "label",
                    ("data", "dataset"): None, ("data", "dataset_config"): None, ("data", "train_split"): "train",
                    ("data", "validation_split"): "validation", ("model", "model_type"): None}


# The architecture fields of ``model`` became optional (null unless model.source=random); a null one is hashed
# as the value it used to hold, so finished runs keep their fingerprints.
_MODEL_LEGACY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128,
                 "vocab_size": 30522, "max_position_embeddings": 512}


def config_hash(cfg: DictConfig) -> str:
    """Fingerprint of what a run computes: two runs with the same hash give the same result."""
    c = OmegaConf.to_container(cfg, resolve=True)
    model = c.get("model")
    if isinstance(model, dict):
        for k, legacy in _MODEL_LEGACY.items():
            if model.get(k, legacy) is None:
                model[k] = legacy
    for k in _NOT_HASHED:
        c.pop(k, None)
    for path, unused in _HASHED_WHEN_SET.items():
        node = c
        for k in path[:-1]:
            node = node.get(k) if isinstance(node, dict) else None
        if isinstance(node, dict) and path[-1] in node and node[path[-1]] == unused:
            del node[path[-1]]
    train = c.get("train")
    if isinstance(train, dict) and "init" not in train:  # rtn (dropped above) reads no reconstruction settings
        train.pop("reconstruct", None)
    c.get("data", {}).pop("glue_dir", None)  # the same rows from the hub or a local copy
    for key in ("train_file", "validation_file"):  # your own files: what they hold, however they are spelled
        if c.get("data", {}).get(key):
            c["data"][key] = file_digest(c["data"][key])
    for k in _TRAIN_NOT_HASHED:
        c.get("train", {}).pop(k, None)
    if isinstance(c.get("teacher"), dict):
        c["teacher"]["source"] = canonical_path(c["teacher"].get("source"))
    if c.get("init_from"):
        c["init_from"] = canonical_path(c["init_from"])
    return fingerprint(c)


def file_digest(path: str) -> str:
    """``sha256:<hex>`` of a file's bytes (a data file a run reads: an edited file is another run); a missing
    path unchanged (the run fails on it later, naming it).

    Example::

        file_digest("tests/data/files/reviews_dev.csv")  # "sha256:3f1c..."
    """
    file = Path(path).expanduser()
    if not file.is_file():
        return path
    digest = hashlib.sha256()
    with file.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def canonical_path(value: Any) -> Any:
    """An existing folder as one spelling, relative to the repository (``../shared/models/x`` however it was
    written: ``$AMQS_SHARED_DIR/models/x``, an absolute path, from another working directory); anything else
    (a hub id, a missing path) unchanged. A run's hash names the folder it read, not how it was spelled, and
    runs recorded from the repository root keep their hashes.

    Example:
        >>> canonical_path(str(REPO_ROOT / "conf")) == canonical_path("conf") == "conf"  # from the repo root
        True
    """
    if not isinstance(value, str) or not Path(value).expanduser().is_dir():
        return value
    return os.path.relpath(Path(value).expanduser().resolve(), REPO_ROOT.resolve())


def shared_models_dir() -> Path:
    """The shared fp32 teachers (``$AMQS_SHARED_DIR/models``, else ``../shared/models`` from the working directory,
    as ``conf/teacher/shared_sst2.yaml`` reads it); it may not exist (real users have none)."""
    return Path(os.environ.get("AMQS_SHARED_DIR", "../shared")) / "models"


def run_dir(cfg: DictConfig) -> Path:
    """A run's folder: ``<paths.results_dir>/runs/<name>`` (QAT runs, searches, their retrains and stages)."""
    return Path(cfg.paths.results_dir) / "runs" / cfg.name


def save_config(cfg: DictConfig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(OmegaConf.to_yaml(cfg, resolve=True))


def write_json(path: Path, obj: Mapping[str, Any]) -> None:
    """Write atomically, so a killed run never leaves half a metrics file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def table_row(metrics: Mapping[str, Any], columns: Sequence[str]) -> dict[str, Any]:
    """A results-table row from a run's metrics: its values for ``columns``, the CPU and threads from its
    provenance.

    Example:
        >>> table_row({"task": "sst2", "provenance": {"cpu": "AMD EPYC"}, "teacher": "x"}, ("task", "cpu"))
        {'task': 'sst2', 'cpu': 'AMD EPYC'}
    """
    row = {c: metrics.get(c) for c in columns}
    prov = metrics.get("provenance") or {}
    for c in ("cpu", "threads"):
        if c in row and row[c] is None:
            row[c] = prov.get(c)
    return row


def upsert_csv(path: Path, row: Mapping[str, Any], key: Sequence[str], columns: Sequence[str]) -> None:
    """Insert ``row`` into a results table, replacing the row with the same ``key`` values."""
    unknown = set(row) - set(columns)
    if unknown:
        raise ValueError(f"{path}: columns {sorted(unknown)} are not in {list(columns)}")
    rows: list[dict[str, Any]] = []
    if path.exists():
        with path.open(newline="") as f:
            rows = [r for r in csv.DictReader(f)]
    ident = tuple(str(row.get(k, "")) for k in key)
    rows = [r for r in rows if tuple(r.get(k, "") for k in key) != ident]
    rows.append({c: row.get(c, "") for c in columns})
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(columns))
        w.writeheader()
        w.writerows(rows)


def prepare_run_dir(out: Path, config_hash: str, overwrite: bool,
                    require: Sequence[str] = ()) -> Optional[dict[str, Any]]:
    """Reuse a finished run, resume an interrupted one, or refuse to clobber another config's.

    Returns the metrics of a finished run in ``out`` made with ``config_hash`` whose ``require``d files
    (e.g. the weights, which git does not keep) are there; otherwise makes sure ``out/checkpoint``
    belongs to this config (stamped with its hash) and returns None, so the run trains (again).

    ``overwrite`` discards a finished record (of any config) and a checkpoint of another config instead of
    refusing; a checkpoint of this very config is kept, so a run started with ``overwrite=true``, killed and
    started again with the same command resumes instead of starting over.
    """
    git_revision()  # pinned now, at the run's start
    metrics_path, ckpt = out / "metrics.json", out / "checkpoint"
    if metrics_path.exists():
        metrics = json.loads(metrics_path.read_text())
        same = metrics.get("config_hash") == config_hash
        missing = [f for f in require if not (out / f).exists()]
        if same and not overwrite and not missing:
            shutil.rmtree(ckpt, ignore_errors=True)  # killed after its metrics were written, before the cleanup
            return metrics
        if not same and not overwrite:
            raise FileExistsError(
                f"{out} holds a run of another config ({metrics.get('config_hash')} != {config_hash}): "
                "pass overwrite=true to replace it, or choose another name"
            )
        if same and missing and not overwrite:
            log.info("%s: the run's record is here but not %s (not kept in git): training it again",
                     out, " or ".join(missing))
        metrics_path.unlink()  # this run writes a new one when it ends
        shutil.rmtree(ckpt, ignore_errors=True)
    check_writable(out)
    if checkpoint_stamp(out) not in (None, config_hash):
        if not overwrite:
            raise FileExistsError(f"{ckpt} is a checkpoint of another config: pass overwrite=true to discard it")
        shutil.rmtree(ckpt)
    ckpt.mkdir(parents=True, exist_ok=True)
    (ckpt / "config_hash").write_text(config_hash)
    return None


def checkpoint_stamp(out: Path) -> Optional[str]:
    """The config hash ``out/checkpoint`` belongs to; None without one (``""`` for an unstamped folder)."""
    ckpt = out / "checkpoint"
    if not ckpt.exists():
        return None
    stamp = ckpt / "config_hash"
    return stamp.read_text() if stamp.exists() else ""


def check_writable(*paths: Path) -> None:
    """Fail before any work when an output folder (or table file) cannot be written.

    A folder that does not exist yet is created (which fails on a read-only parent); a file that exists must
    be writable, one that does not must have a writable folder.
    """
    for path in paths:
        path = Path(path)
        if path.suffix:  # a file: its folder must take it
            folder = path.parent
            ok = os.access(path, os.W_OK) if path.exists() else None
        else:
            folder, ok = path, None
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise PermissionError(f"cannot create the output folder {folder} ({e.strerror}): choose a writable "
                                  "paths.results_dir (or --out / --results)") from None
        if ok is None:
            ok = os.access(folder, os.W_OK)
        if not ok:
            raise PermissionError(f"{path} is not writable: choose a writable paths.results_dir "
                                  "(or --out / --results), or fix its permissions")


# The measured results of the repository: only explicit, non-debug runs may write here (README, Results).
TRACKED_RESULTS = REPO_ROOT / "results"


def check_results_dir(results_dir: str | Path, *, smoke: bool, model_source: str = "") -> None:
    """Refuse to let a debug run (``debug=smoke``, a random model) write the repository's measured results
    (``results/`` or anything under it).

    Example:
        >>> check_results_dir("outputs/smoke", smoke=True)    # fine; TRACKED_RESULTS would raise ValueError
    """
    if not (smoke or model_source == "random"):
        return
    if Path(results_dir).resolve().is_relative_to(TRACKED_RESULTS.resolve()):
        what = "debug run (debug=smoke)" if smoke else "run of a random model (model.source=random)"
        raise ValueError(f"paths.results_dir={results_dir} is the repository's measured results: a {what} never "
                         "writes there; use another folder (the default is outputs/, debug=smoke uses outputs/smoke)")


def relative_run(out: Path, results_dir: str | Path) -> str:
    """A run folder as the tables key it: its path under ``results_dir`` (``runs/sst2-w8a8``).

    Example:
        >>> relative_run(Path("results/runs/sst2-w8a8"), "results")
        'runs/sst2-w8a8'
    """
    try:
        return Path(out).resolve().relative_to(Path(results_dir).resolve()).as_posix()
    except ValueError:
        return Path(out).as_posix()


def command_line(program: str, overrides: Iterable[str]) -> str:
    """The command that reproduces a Hydra run: program plus its command-line overrides."""
    return " ".join([program, *overrides])
