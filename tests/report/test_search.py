from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from amqs.report.search import render


def test_search_report_puts_searched_rows_beside_baselines_and_step_ratio(tmp_path: Path) -> None:
    pd.DataFrame({"task": ["sst2", "sst2"], "space": ["default"] * 2, "budget_compression": [16.2, 10.8],
                  "encoder_bytes": [2_600_000, 3_900_000], "dev_accuracy": [0.85, 0.88],
                  "command": ["amqs-search budget=c16_2", "amqs-search budget=c10_8"]}).to_csv(tmp_path / "search.csv", index=False)
    pd.DataFrame({"task": ["sst2", "mrpc"], "method": ["w2a8", "w8a8"], "dev_accuracy": [0.8, 0.7],
                  "command": ["a", "b"]}).to_csv(tmp_path / "baselines.csv", index=False)
    (tmp_path / "search_step.json").write_text(json.dumps({
        "batch": 32, "length": 64, "threads": 1, "steps": 10, "supernet_over_qat": 2.05,
        "peak_rss_mb_supernet": 2265.0, "peak_rss_mb_qat": 1869.0, "peak_rss_supernet_over_qat": 1.21,
        "command": "python bench/search_step.py"}))
    md = render(tmp_path).read_text()
    assert md.index("| sst2 | default | 10.80") < md.index("| sst2 | default | 16.20")  # sorted by budget
    assert "| sst2 | w2a8 | 80.00 |" in md and "| mrpc |" not in md
    assert "**2.05x**" in md and "**1.21x**" in md


def test_step_cost_of_an_every_k_schedule_reports_the_mean_ratio(tmp_path: Path) -> None:
    pd.DataFrame({"task": ["sst2"], "space": ["default"], "budget_compression": [13.0], "dev_accuracy": [0.86],
                  "command": ["amqs-search budget=c13"]}).to_csv(tmp_path / "search.csv", index=False)
    (tmp_path / "search_step.json").write_text(json.dumps({
        "batch": 32, "length": 64, "threads": 1, "steps": 12, "arch_every": 4, "precision": "fp32",
        "qat_step_s_median": 3.0, "supernet_arch_step_s_median": 5.4, "supernet_over_qat": 1.27,
        "supernet_over_qat_bf16": 1.26, "peak_rss_mb_supernet": 1750.0, "peak_rss_mb_qat": 1560.0,
        "peak_rss_supernet_over_qat": 1.12, "command": "python bench/search_step.py"}))
    md = render(tmp_path).read_text()
    assert "the mean of 12 steps" in md and "on one step in 4," in md and "**1.27x**" in md and "**1.26x**" in md
    assert "moves the architecture 1.80x" in md and "**1.12x**" in md
