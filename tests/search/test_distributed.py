"""The search under torchrun: 2 CPU processes (gloo) on the tiny BERT."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from amqs.finetune import run as finetune
from amqs.quant import BitAssignment
from tests.conftest import REPO, compose_cfg


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
# uneven: also a checkpoint after step 1 (both ranks' RNG states gathered into rank 0's file).
@pytest.mark.parametrize("rows,steps,every", [(256, 4, 4), (65, 2, 1)], ids=["even", "uneven"])
def test_search_on_two_processes(tmp_path: Path, glue_dir: Path, rows: int, steps: int, every: int) -> None:
    overrides = ["debug=smoke", f"paths.results_dir={tmp_path}", f"data.glue_dir={glue_dir}",
                 f"data.max_train_examples={rows}", f"train.checkpoint_every={every}"]
    finetune(compose_cfg("finetune", overrides))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", "-m", "amqs.search.app", *overrides, "train.num_threads=1"]
    # The children import this checkout's amqs (not another install's).
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = next((tmp_path / "runs").iterdir())
    bits = BitAssignment.from_json(out / "bits.json")
    assert bits.meta["world_size"] == 2  # and the ranks agreed on it (checked in the run)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["compression"] == pytest.approx(13.0, rel=0.06)
    # Each rank takes ceil(rows / 2) rows per epoch (an odd count is padded, so both run the same
    # number of steps): 256 -> 128 rows / batch 32 = 4 steps; 65 -> 33 rows = 2 steps (32 + 1).
    log = [json.loads(line) for line in (out / "search_log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == steps == bits.meta["search_steps"]
