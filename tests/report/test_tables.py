from __future__ import annotations

from pathlib import Path

import pandas as pd

import pytest

from amqs.report.tables import main, render_csv, to_markdown


def test_markdown_formats_percentages_bytes_and_commands(tmp_path: Path) -> None:
    df = pd.DataFrame({"task": ["sst2"], "method": ["w8a8"], "encoder_bytes": [5_431_872], "dev_accuracy": [0.89335],
                       "dev_f1": [float("nan")], "command": ["amqs-qat quant=w8a8"]})
    md = to_markdown(df, "Baselines", ["Budget: 16,000 examples."])
    assert "| task | method | encoder_bytes | dev_accuracy (%) | dev_f1 (%) |" in md
    assert "| sst2 | w8a8 | 5,431,872 | 89.33 | – |" in md
    assert md.index("Budget") < md.index("| task") < md.index("`amqs-qat quant=w8a8`")
    csv = tmp_path / "t.csv"
    df.to_csv(csv, index=False)
    assert render_csv(csv).read_text() == to_markdown(pd.read_csv(csv), "t")


def test_where_selects_rows_and_rejects_unknown_columns(tmp_path: Path) -> None:
    csv = tmp_path / "baselines.csv"
    pd.DataFrame({"task": ["sst2", "sst2", "mrpc"], "method": ["w8a8", "q8bert", "w8a8"],
                  "dev_accuracy": [0.9, 0.8, 0.7]}).to_csv(csv, index=False)
    out = tmp_path / "uniform.md"
    main([str(csv), "--out", str(out), "--where", "task=sst2", "--where", "method=w8a8,w4a8"])
    md = out.read_text()
    assert "| sst2 | w8a8 | 90.00 |" in md and "q8bert" not in md and "mrpc" not in md
    with pytest.raises(ValueError, match="COLUMN=VALUE"):
        main([str(csv), "--where", "bits=8"])
    with pytest.raises(ValueError, match="keeps no row"):
        main([str(csv), "--where", "method=w2a8"])
    main([str(csv), "--out", str(out), "--where", "dev_accuracy=0.7"])  # numeric: 0.7 == 0.70
    assert "mrpc" in out.read_text() and "sst2" not in out.read_text()
