"""Where a study lives: an Optuna storage from ``outer.storage``, with heartbeats, checked before any trial.

    outer.storage=null                                   # sqlite:///<results_dir>/studies/<name>/study.db
    outer.storage=postgresql://user:password@host/amqs   # workers on several machines (psycopg)
    outer.storage=journal:///shared/studies/big.log      # a shared filesystem and no database server

SQL URLs open Optuna's ``RDBStorage`` (SQLite waits for the file lock; a server is reached once first, so an
unreachable one fails in one line instead of after the retries). ``journal://`` opens Optuna's ``JournalStorage``
over a ``JournalFileBackend`` (an append-only log with a file lock), which Optuna gives no heartbeat: amqs adds one
(:class:`HeartbeatJournal`), so a dead worker's trial is failed and rerun on a journal as on a database.

Example::

    storage = make_storage("journal:///shared/studies/s.log", heartbeat_interval=30, grace_period=120)
    study = optuna.create_study(study_name="s", storage=storage, load_if_exists=True)
"""

from __future__ import annotations

import contextlib
import json
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import optuna
from optuna.storages import BaseStorage, JournalStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

StaleCallback = Callable[[optuna.Study, FrozenTrial], None]
SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mariadb", "oracle", "mssql")  # SQLAlchemy dialects (+driver)
JOURNAL_SCHEME = "journal"
HEARTBEAT_ATTR = "amqs_heartbeat"  # a journal trial's last heartbeat (seconds since the epoch)
STUDY_FILE, DB_FILE = "study.json", "study.db"  # a study folder's description and default SQLite file
HELP = ("sqlite:///path/study.db, postgresql://user:password@host/db (driver: pip install 'psycopg[binary]') or "
        "journal:///path/on/shared/fs/study.log")


@contextlib.contextmanager
def experimental() -> Iterator[None]:
    """Silence Optuna's ExperimentalWarning: amqs relies on heartbeats (experimental since Optuna 2.9), the journal
    file backend and metric names, and says nothing a user could act on by repeating the warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def scheme(url: str) -> str:
    """The storage kind of a URL: one of :data:`SQL_SCHEMES` or ``journal``; anything else fails in one line.

    Example:
        >>> scheme("postgresql+psycopg2://u@h/db"), scheme("journal:///tmp/s.log")
        ('postgresql', 'journal')
    """
    head = url.split("://", 1)[0].split("+", 1)[0].lower() if "://" in url else ""
    if head in (*SQL_SCHEMES, JOURNAL_SCHEME):
        return head
    hint = " (SQLAlchemy spells it postgresql://)" if head == "postgres" else ""
    raise ValueError(f"outer.storage: unknown storage scheme {head or url!r}{hint}; give {HELP}")


def safe_url(url: str) -> str:
    """The URL without its password (for messages and study.json).

    Example:
        >>> safe_url("postgresql://amqs:secret@db.lan/amqs")
        'postgresql://amqs:***@db.lan/amqs'
    """
    if scheme(url) == JOURNAL_SCHEME:
        return url
    import sqlalchemy

    return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)


def journal_path(url: str) -> Path:
    """The log file of a ``journal:///abs/path`` (or ``journal://relative/path``) URL; its folder must exist."""
    path = Path(url.split("://", 1)[1]).expanduser()
    if not path.name or path.is_dir():
        raise ValueError(f"outer.storage={url}: name the journal file, e.g. journal:///shared/studies/study.log")
    if not path.parent.is_dir():
        raise ValueError(f"outer.storage={url}: folder {path.parent} does not exist (create it on the shared "
                         "filesystem every worker mounts)")
    return path


class HeartbeatJournal(JournalStorage, BaseHeartbeat):
    """Optuna's journal storage with the heartbeat of its RDB storage: a running trial's heartbeat is a system
    attribute holding this machine's clock, so :func:`optuna.storages.fail_stale_trials` (run by every worker
    before it asks for a trial) fails a trial silent for ``grace_period`` seconds and calls ``on_stale``.

    Unlike a database's clock, the workers' clocks are compared: keep them synchronised (NTP) well within the
    grace period.
    """

    def __init__(self, backend: JournalFileBackend, heartbeat_interval: Optional[int], grace_period: int,
                 on_stale: Optional[StaleCallback] = None) -> None:
        super().__init__(backend)
        self.heartbeat_interval, self.grace_period, self.on_stale = heartbeat_interval, grace_period, on_stale

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # another worker failed it meanwhile: its tell() will say so

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        return [t._trial_id for t in running
                if HEARTBEAT_ATTR in t.system_attrs and now - t.system_attrs[HEARTBEAT_ATTR] > self.grace_period]

    def get_heartbeat_interval(self) -> Optional[int]:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> Optional[StaleCallback]:
        return self.on_stale


def make_storage(url: str, heartbeat_interval: Optional[int] = None, grace_period: Optional[int] = None,
                 on_stale: Optional[StaleCallback] = None) -> BaseStorage:
    """The storage of ``url`` (:func:`scheme`), with heartbeats when ``heartbeat_interval`` is given.

    ``on_stale(study, trial)`` runs for each RUNNING trial this process marks FAILED. Bad input fails in one
    line: an unknown scheme, a missing driver, an unreachable server, a journal's missing folder.

    Example:
        >>> storage = make_storage("sqlite:///results/studies/s/study.db", 30, 120)   # doctest: +SKIP
    """
    grace = grace_period or (4 * heartbeat_interval if heartbeat_interval else None)
    if scheme(url) == JOURNAL_SCHEME:
        with experimental():
            backend = JournalFileBackend(str(journal_path(url)))
        return HeartbeatJournal(backend, heartbeat_interval, grace or 0, on_stale)
    return _rdb(url, heartbeat_interval, grace, on_stale)


def _rdb(url: str, heartbeat_interval: Optional[int], grace: Optional[int],
         on_stale: Optional[StaleCallback]) -> optuna.storages.RDBStorage:
    import sqlalchemy

    sqlite = scheme(url) == "sqlite"
    kwargs: dict[str, Any] = {"connect_args": {"timeout": 120}} if sqlite else {}
    if not sqlite:
        _check_reachable(url)
    for attempt in range(5):
        try:
            with experimental():  # heartbeats
                return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=heartbeat_interval,
                                                  grace_period=grace, heartbeat_stale_trial_callback=on_stale)
        except (sqlalchemy.exc.ArgumentError, ImportError) as e:
            raise ValueError(f"outer.storage={safe_url(url)}: {e}. Give {HELP}") from None
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.ProgrammingError):
            if attempt == 4:
                raise
            time.sleep(0.5 * (attempt + 1))  # workers started together race to create the new tables
    raise AssertionError("unreachable")


def _check_reachable(url: str, timeout: int = 10) -> None:
    """Connect once: an unreachable server or a missing driver fails here in one line."""
    import sqlalchemy

    args = {"connect_timeout": timeout} if scheme(url) == "postgresql" else {}
    try:
        engine = sqlalchemy.create_engine(url, connect_args=args)
    except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError, ImportError) as e:
        raise ValueError(f"outer.storage={safe_url(url)}: {e}. Give {HELP}") from None
    try:
        with engine.connect():
            pass
    except sqlalchemy.exc.OperationalError as e:
        first = str(e.orig or e).strip().splitlines()[0]
        raise ValueError(f"outer.storage: cannot reach {safe_url(url)}: {first}") from None
    finally:
        engine.dispose()


def load_study(study_dir: Path, storage: Optional[str] = None, study_name: Optional[str] = None) -> optuna.Study:
    """The study of a folder (its ``study.db``), or of ``storage`` (a URL) for a study kept elsewhere, e.g. on a
    machine with the storage URL only (the name then comes from ``study.json`` or must be given)."""
    study_dir = Path(study_dir)
    info_file = study_dir / STUDY_FILE
    info = json.loads(info_file.read_text()) if info_file.exists() else {}
    if storage is None:
        db = study_dir / DB_FILE
        if not db.exists():
            raise FileNotFoundError(f"{db} not found: pass --storage URL (the study's outer.storage)")
        storage = f"sqlite:///{db.resolve()}"
    opened = make_storage(storage)
    name = study_name or info.get("study_name")
    if name is None:
        names = optuna.get_all_study_names(opened)
        if len(names) != 1:
            raise ValueError(f"{safe_url(storage)} holds studies {names}: pass --study NAME")
        name = names[0]
    try:
        return optuna.load_study(study_name=name, storage=opened)
    except KeyError:
        raise ValueError(f"no study {name!r} in {safe_url(storage)}; it holds "
                         f"{optuna.get_all_study_names(opened)}") from None


__all__ = ["DB_FILE", "HEARTBEAT_ATTR", "HeartbeatJournal", "JOURNAL_SCHEME", "SQL_SCHEMES", "STUDY_FILE",
           "experimental", "journal_path", "load_study", "make_storage", "safe_url", "scheme"]
