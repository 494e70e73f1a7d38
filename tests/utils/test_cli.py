"""User errors: one line that names the fix, exit status 2, no traceback, within seconds."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from amqs.utils.cli import EXIT_USER_ERROR, UserError, one_line, user_errors
from tests.conftest import REPO


def test_user_errors_print_one_line_and_exit_2(capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AMQS_DEBUG", raising=False)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as e, user_errors("amqs-x"):
        raise FileNotFoundError("teacher.source=x does not exist: make it with `amqs-finetune`")
    err = capsys.readouterr().err
    assert e.value.code == EXIT_USER_ERROR and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("amqs-x: teacher.source=x does not exist: make it with `amqs-finetune`")
    with pytest.raises(SystemExit) as e, user_errors("amqs-x"):
        raise KeyboardInterrupt
    assert e.value.code == 130 and "run the same command again to resume" in capsys.readouterr().err


def test_debug_switch_shows_the_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMQS_DEBUG", "1")
    with pytest.raises(UserError, match="bad"), user_errors("amqs-x"):
        raise UserError("bad")


def test_bugs_keep_their_traceback() -> None:
    with pytest.raises(ZeroDivisionError), user_errors("amqs-x"):
        1 / 0


def test_one_line_joins_lines() -> None:
    assert one_line(ValueError("a\n  b")) == "a b"


def _cli(*args: str, cwd: Path = REPO) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120, cwd=cwd,
                          env={k: v for k, v in __import__("os").environ.items() if k not in ("AMQS_DEBUG",
                                                                                              "HYDRA_FULL_ERROR")})
    return proc, time.perf_counter() - t0


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    # a missing teacher names the amqs-finetune command that makes it, with the model option as typed
    (["-m", "amqs.qat", "debug=smoke", "paths.results_dir={tmp}"],
     "teacher.source={tmp}/teachers/bert-tiny-sst2/model does not exist: make it with `amqs-finetune debug=smoke "
     "data=sst2 paths.results_dir={tmp}`"),
    (["-m", "amqs.qat", "model=bert_tiny", "paths.results_dir={tmp}"],
     "make it with `amqs-finetune model=bert_tiny data=sst2 paths.results_dir={tmp}`"),
    # a smoke run aimed at the measured tables
    (["-m", "amqs.search.app", "debug=smoke", f"paths.results_dir={REPO / 'results'}"],
     "is the repository's measured results: a debug run (debug=smoke) never writes there"),
    # a device that is not there, before any work
    (["-m", "amqs.finetune", "debug=smoke", "device=cuda:7", "paths.results_dir={tmp}"], "device=cuda:7"),
])
def test_cli_user_errors(args: list[str], message: str, tmp_path: Path) -> None:
    proc, seconds = _cli(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == EXIT_USER_ERROR, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and message.replace("{tmp}", str(tmp_path)) in err[-1], err[-1]
    assert seconds < 60
