"""Fixtures of the outer-loop tests: a real PostgreSQL server (pgserver) and a tiny teacher, both once per session."""

from __future__ import annotations

import itertools
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Iterator

import pytest

from amqs.finetune import run as finetune
from tests.conftest import compose_cfg

_databases = itertools.count()


@pytest.fixture(scope="session")
def postgres() -> Iterator["object"]:
    """A PostgreSQL server started from Python (the dev extra's pgserver: a real server, about a second to start),
    stopped and deleted at the end of the session. Its folder is short: the server's Unix socket lives in it."""
    pgserver = pytest.importorskip("pgserver", reason="pip install -e '.[dev]' (pgserver, psycopg2-binary)")
    folder = tempfile.mkdtemp(prefix="amqs-pg-")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR is not set
        server = pgserver.get_server(folder, cleanup_mode="delete")
    yield server
    server.cleanup()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres) -> str:
    """A fresh, empty database on the session's server: postgresql://postgres:@/<db>?host=<socket folder>."""
    name = f"amqs_test_{next(_databases)}"
    postgres.psql(f"CREATE DATABASE {name};")
    return postgres.get_uri(name)


@pytest.fixture(scope="session")
def smoke_teacher(tmp_path_factory: pytest.TempPathFactory, glue_dir: Path) -> Path:
    """The tiny fine-tuned teacher of debug=smoke, made once for every study test that pins it."""
    root = tmp_path_factory.mktemp("smoke-teacher")
    finetune(compose_cfg("finetune", ["debug=smoke", f"paths.results_dir={root}", f"data.glue_dir={glue_dir}",
                                      "train.num_threads=1"]))
    return root / "teachers" / "bert-tiny-sst2" / "model"
