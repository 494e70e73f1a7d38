"""Every command recorded in a committed result still parses with today's configuration.

Sources: the ``command`` column of every tracked results CSV (``git ls-files 'results/*.csv' 'results/**/*.csv'``)
and the ``command`` of every committed ``metrics.json`` / ``study.json`` under ``results/``.

- Hydra apps (``amqs-finetune``, ``amqs-qat``, ``amqs-search``, ``python -m amqs.<app>``, ``torchrun ... -m
  amqs.search.app``) are composed with ``hydra.compose`` and resolved: compose only, nothing runs.
- argparse apps (``amqs-export``, ``amqs-bench``, ``amqs-replay``, ``python -m amqs.search.control``) are parsed with
  their app's ``parser()``.
- A study's trial records the study's command with a trailing note ``(trial N)``: the note is not part of the
  command line and is stripped; the rest must compose.
- Scripts under ``bench/`` (``bash bench/x.sh``, ``python bench/x.py ...``) regenerate tables or time kernels;
  they are not configs: the script must exist (its own runs record their own commands).
"""

from __future__ import annotations

import csv
import json
import re
import shlex
import subprocess
from collections import defaultdict

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from amqs.config import CONF_DIR, register_configs
from tests.conftest import REPO

HYDRA = {"amqs-finetune": "finetune", "amqs-qat": "qat", "amqs-search": "search", "amqs.finetune": "finetune",
         "amqs.qat": "qat", "amqs.search.app": "search"}
ARGPARSE = {"amqs-export": "amqs.export.app", "amqs-bench": "amqs.bench", "amqs-replay": "amqs.replay",
            "amqs.export.app": "amqs.export.app", "amqs.bench": "amqs.bench", "amqs.replay": "amqs.replay",
            "amqs.search.control": "amqs.search.control"}
_TRIAL_NOTE = re.compile(r"\s*\(trial \d+\)$")


def _git_ls(*patterns: str) -> list[str]:
    return subprocess.run(["git", "ls-files", *patterns], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout.split()


def _recorded() -> dict[str, list[str]]:
    """command -> where it is recorded (file:row or file)."""
    where: dict[str, list[str]] = defaultdict(list)
    for path in _git_ls("results/*.csv", "results/**/*.csv"):
        with (REPO / path).open(newline="") as f:
            for i, row in enumerate(csv.DictReader(f), start=2):  # line 1 is the header
                if row.get("command"):
                    where[row["command"]].append(f"{path}:{i}")
    for path in _git_ls("results/**metrics.json", "results/**study.json"):
        command = json.loads((REPO / path).read_text()).get("command")
        if command:
            where[command].append(path)
    return dict(where)


RECORDED = _recorded()


def _program(argv: list[str]) -> tuple[str, list[str]]:
    """(program, its arguments): ``python -m mod`` and ``torchrun [opts] -m mod`` name the module."""
    if argv[0] in ("python", "python3", "torchrun") and "-m" in argv:
        i = argv.index("-m")
        return argv[i + 1], argv[i + 2:]
    if argv[0] in ("bash", "python", "python3") and len(argv) > 1:
        return argv[1], argv[2:]
    return argv[0], argv[1:]


def test_there_are_recorded_commands() -> None:
    assert len(RECORDED) > 20 and any(c.startswith("amqs-export") for c in RECORDED)


@pytest.mark.parametrize("command", sorted(RECORDED), ids=lambda c: c[:80])
def test_recorded_command_parses_today(command: str) -> None:
    where = ", ".join(RECORDED[command])
    line = _TRIAL_NOTE.sub("", command)
    program, args = _program(shlex.split(line))
    try:
        if program in HYDRA:
            register_configs()
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
                OmegaConf.to_container(compose(HYDRA[program], overrides=args), resolve=True)
        elif program in ARGPARSE:
            module = __import__(ARGPARSE[program], fromlist=["parser"])
            module.parser().parse_args(args)
        elif program.startswith("bench/"):
            assert (REPO / program).is_file(), f"{program}: no such script"
        else:
            pytest.fail(f"{where}: unknown program {program!r} in {command!r}: teach this test how to parse it")
    except SystemExit as e:  # argparse
        pytest.fail(f"{where}: {command!r} does not parse with today's {program} (exit {e.code})")
    except Exception as e:  # noqa: BLE001 - the failure must name the file and row
        pytest.fail(f"{where}: {command!r} does not compose today: {type(e).__name__}: {str(e).splitlines()[0]}")
