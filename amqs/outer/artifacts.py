"""A copy of every trial's files that any machine can read: an Optuna artifact store (``outer.artifacts``).

    outer.artifacts=/shared/amqs-artifacts        # a folder every machine mounts (FileSystemArtifactStore)
    outer.artifacts=s3://bucket/amqs/big          # S3 under a key prefix (Boto3ArtifactStore; boto3 configured)
    outer.artifacts_model=true                    # also the retrained student and the trial's export

The trial's folder (``<study>/runs/trial_<n>``) stays the primary copy. When a trial ends (complete, pruned or
failed) its bit assignment, metrics, config and logs are uploaded with :func:`optuna.artifacts.upload_artifact`,
and the ids recorded on the trial as the user attribute ``artifacts`` = {path in the run folder: artifact id}.
The study records the store (user attribute ``amqs_artifacts``), so a machine with only the storage URL can
rebuild the report and export a trial: :func:`fetch_trial` downloads what a local run folder lacks.

Example::

    store = make_store("/shared/amqs-artifacts")
    ids = upload_trial(store, trial, Path("results/studies/s/runs/trial_0003"), model=False)
    fetch_trial(study, 3, Path("elsewhere/studies/s"))      # -> elsewhere/studies/s/runs/trial_0003
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Optional

import optuna
from optuna.artifacts import FileSystemArtifactStore, download_artifact, upload_artifact

log = logging.getLogger(__name__)

ARTIFACTS_ATTR = "artifacts"  # trial user attribute: {relative path: artifact id}
STORE_ATTR = "amqs_artifacts"  # study user attribute: where the artifacts are (outer.artifacts)
# What a trial uploads: its assignment, metrics, configs and logs (the search's and the retrain's).
TRIAL_FILES = ("config.yaml", "bits.json", "metrics.json", "search_log.jsonl", "retrain/config.yaml",
               "retrain/bits.json", "retrain/metrics.json", "retrain/train_log.jsonl", "retrain/dev_predictions.json")
MODEL_FILES = ("retrain/student.pt",)  # with outer.artifacts_model, plus every file of export/ (latency_ms)


class PrefixedStore:
    """An artifact store whose ids live under a key prefix (``s3://bucket/prefix`` -> keys ``prefix/<id>``)."""

    def __init__(self, store: Any, prefix: str) -> None:
        self.store, self.prefix = store, prefix.strip("/")

    def open_reader(self, artifact_id: str) -> BinaryIO:
        return self.store.open_reader(f"{self.prefix}/{artifact_id}")

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        self.store.write(f"{self.prefix}/{artifact_id}", content_body)

    def remove(self, artifact_id: str) -> None:
        self.store.remove(f"{self.prefix}/{artifact_id}")


def make_store(url: Optional[str]) -> Any:
    """The artifact store of ``outer.artifacts``: None, a folder that exists, or ``s3://bucket[/prefix]``.

    Example:
        >>> make_store(None) is None
        True
    """
    if url is None:
        return None
    url = str(url)
    if url.startswith("s3://"):
        bucket, _, prefix = url[len("s3://"):].partition("/")
        try:
            import boto3  # noqa: F401
        except ImportError:
            raise ValueError(f"outer.artifacts={url}: S3 needs boto3 (pip install boto3) and its credentials "
                             "(AWS_* variables or ~/.aws)") from None
        from optuna.artifacts import Boto3ArtifactStore

        store = Boto3ArtifactStore(bucket)
        return PrefixedStore(store, prefix) if prefix.strip("/") else store
    if "://" in url and not url.startswith("file://"):
        raise ValueError(f"outer.artifacts={url}: unknown scheme; give a folder on shared storage or "
                         "s3://bucket/prefix")
    path = Path(url.removeprefix("file://")).expanduser()
    if not path.is_dir():
        raise ValueError(f"outer.artifacts={url}: folder {path} does not exist (create it on storage that every "
                         "worker and the machine of the report can read)")
    return FileSystemArtifactStore(path.resolve())


def store_url(url: Optional[str]) -> Optional[str]:
    """What the study records for ``outer.artifacts``: a folder as an absolute path, other URLs as given."""
    if url is None or "://" in str(url) and not str(url).startswith("file://"):
        return url
    return str(Path(str(url).removeprefix("file://")).expanduser().resolve())


def trial_files(run_dir: Path, model: bool = False) -> list[str]:
    """The files of a trial's run folder to upload (those that exist), as paths relative to it."""
    names = [*TRIAL_FILES, *(MODEL_FILES if model else ())]
    if model and (run_dir / "export").is_dir():
        names += sorted(str(p.relative_to(run_dir)) for p in (run_dir / "export").iterdir() if p.is_file())
    return [n for n in names if (run_dir / n).is_file()]


def upload_trial(store: Any, trial: optuna.Trial, run_dir: Path, model: bool = False) -> dict[str, str]:
    """Upload the trial's files (:func:`trial_files`) and record their ids on it; returns {path: id}.

    The local folder is the primary copy: a failed upload is logged and recorded (user attribute
    ``artifacts_error``), and the trial goes on.
    """
    ids: dict[str, str] = {}
    try:
        for rel in trial_files(run_dir, model):
            ids[rel] = upload_artifact(artifact_store=store, file_path=str(run_dir / rel), study_or_trial=trial)
    except Exception as e:  # noqa: BLE001 - a copy that failed must not lose the trial
        log.warning("trial %d: uploading %s failed (%s): its artifacts are incomplete", trial.number, run_dir, e)
        trial.set_user_attr("artifacts_error", f"{type(e).__name__}: {e}")
    trial.set_user_attr(ARTIFACTS_ATTR, ids)
    return ids


def study_store(study: optuna.Study, override: Optional[str] = None) -> Any:
    """The artifact store of a study: ``override`` (e.g. the folder where this machine mounts it), else the one
    the study recorded; None when it has none."""
    return make_store(override or study.user_attrs.get(STORE_ATTR))


def fetch_trial(study: optuna.Study, number: int, study_dir: Path, store: Any = None,
                files: Optional[Iterable[str]] = None) -> Path:
    """Download into ``<study_dir>/<run_dir>`` the files of trial ``number`` (all, or ``files``) that are missing
    there; returns the run folder. Files already present are kept (the local copy is the primary one)."""
    trial = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
    if trial is None or "run_dir" not in trial.user_attrs:
        raise ValueError(f"trial {number} is not in study {study.study_name} or has no run folder")
    run_dir = Path(study_dir) / trial.user_attrs["run_dir"]
    ids: dict[str, str] = trial.user_attrs.get(ARTIFACTS_ATTR) or {}
    wanted = list(ids) if files is None else list(files)
    missing = [f for f in wanted if not (run_dir / f).is_file()]
    if not missing:
        return run_dir
    absent = [f for f in missing if f not in ids]
    if absent:
        hint = " (the student is copied with outer.artifacts_model=true)" if set(absent) & set(MODEL_FILES) else ""
        raise FileNotFoundError(f"trial {number}: {', '.join(absent)} neither in {run_dir} nor in its artifacts"
                                f"{hint}; uploaded: {sorted(ids) or 'none, the study ran without outer.artifacts'}")
    store = store if store is not None else study_store(study)
    if store is None:
        raise ValueError(f"study {study.study_name} records no artifact store: pass --artifacts FOLDER_OR_URL")
    for rel in missing:
        dest = run_dir / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        part.unlink(missing_ok=True)
        download_artifact(artifact_store=store, file_path=str(part), artifact_id=ids[rel])
        part.replace(dest)  # a cut download never passes for the file
    return run_dir


__all__ = ["ARTIFACTS_ATTR", "MODEL_FILES", "PrefixedStore", "STORE_ATTR", "TRIAL_FILES", "fetch_trial",
           "make_store", "store_url", "study_store", "trial_files", "upload_trial"]
