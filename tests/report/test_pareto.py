from __future__ import annotations

import math
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from amqs.quant import BitAssignment, ModuleBits
from amqs.report.pareto import (
    chosen_trial,
    load_baselines,
    pareto_front,
    render_markdown,
    trials_table,
)
from amqs.report.plots import encoder_rows, plot_bits, plot_pareto

MAX_MIN = ["maximize", "minimize"]


def test_pareto_front_on_hand_made_points() -> None:
    # (accuracy up, MB down): b is smaller and as accurate as a, so a is dominated.
    pts = {"a": (0.90, 3.0), "b": (0.90, 2.5), "c": (0.88, 2.0), "d": (0.85, 2.2), "e": (0.92, 4.0)}
    assert dict(zip(pts, pareto_front(list(pts.values()), MAX_MIN))) == {
        "a": False, "b": True, "c": True, "d": False, "e": True}
    assert pareto_front([(1, 1), (1, 1)], MAX_MIN) == [True, True]  # equal points do not dominate each other
    assert pareto_front([(1, 2), (2, 1), (2, 2)], ["minimize", "minimize"]) == [True, True, False]
    assert pareto_front([(1, 2), (2, 1), (2, 2)], ["maximize", "maximize"]) == [False, False, True]
    three = [(0.9, 3.0, 10.0), (0.9, 3.0, 12.0), (0.8, 1.0, 20.0)]  # a third objective (latency) down
    assert pareto_front(three, ["maximize", "minimize", "minimize"]) == [True, False, True]
    assert pareto_front([(math.nan, 1.0), (0.5, 2.0)], MAX_MIN) == [False, True]
    assert pareto_front([], MAX_MIN) == []


def test_pareto_front_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="maximize"):
        pareto_front([(1, 2)], ["max", "minimize"])
    with pytest.raises(ValueError, match="2 directions"):
        pareto_front([(1, 2, 3)], MAX_MIN)


def _study() -> optuna.Study:
    study = optuna.create_study(directions=MAX_MIN)
    study.set_user_attr("amqs_objectives", ["search_val_accuracy", "encoder_bytes"])
    dist = {"lam": FloatDistribution(1, 200, log=True)}
    for lam, acc, size, dev in ((10.0, 0.90, 3.0e6, 0.89), (50.0, 0.88, 2.0e6, 0.90), (90.0, 0.86, 2.5e6, 0.85)):
        attrs = {"search_val_accuracy": acc, "encoder_bytes": size, "dev_accuracy": dev, "compression": 42.6e6 / size,
                 "fp32_encoder_bytes": 42.6e6, "run_dir": f"runs/trial_{len(study.trials):04d}"}
        study.add_trial(create_trial(params={"lam": lam}, distributions=dist, values=[acc, size], user_attrs=attrs))
    study.add_trial(create_trial(params={"lam": 150.0}, distributions=dist, state=TrialState.PRUNED,
                                 user_attrs={"intermediate": [[5, 0.7], [10, 0.8]]}))
    study.add_trial(create_trial(state=TrialState.FAIL))
    return study


def test_trials_table_has_every_trial_and_marks_the_front() -> None:
    df = trials_table(_study())
    assert list(df["state"]) == ["COMPLETE", "COMPLETE", "COMPLETE", "PRUNED", "FAIL"]
    assert list(df["is_pareto"]) == [True, True, False, False, False]
    assert list(df["param_lam"][:4]) == [10.0, 50.0, 90.0, 150.0] and math.isnan(df["param_lam"][4])
    assert df["last_step"][3] == 10 and df["encoder_mb"][0] == pytest.approx(3.0)
    assert chosen_trial(df) == 0  # the most accurate Pareto trial on search-val (not dev, where trial 1 wins)


def test_baselines_of_the_same_model_and_the_pictures(tmp_path: Path) -> None:
    csv = tmp_path / "baselines.csv"
    pd.DataFrame([
        {"task": "sst2", "method": "fp32", "encoder_bytes": 42.6e6, "compression": 1.0, "dev_accuracy": 0.89},
        {"task": "sst2", "method": "w4a8", "encoder_bytes": 5.4e6, "compression": 7.889, "dev_accuracy": 0.87},
        {"task": "sst2", "method": "w8a8", "encoder_bytes": 1.0e5, "compression": 2.0, "dev_accuracy": 0.5},  # other model
        {"task": "mrpc", "method": "fp32", "encoder_bytes": 42.6e6, "compression": 1.0, "dev_accuracy": 0.8},
    ]).to_csv(csv, index=False)
    base = load_baselines(csv, "sst2", 42.6e6)
    assert list(base["method"]) == ["fp32", "w4a8"]
    assert load_baselines(tmp_path / "missing.csv", "sst2", 42.6e6).empty

    study = _study()
    df = trials_table(study)
    assert plot_pareto(df, tmp_path / "pareto.png", base).stat().st_size > 0
    md = render_markdown(study, df, {"task": "sst2", "model": "minilm-l6"}, 0, ["pareto.png"], base)
    assert "| 0 | 10 |" in md and "Uniform baselines" in md

    lin = {"out_features": 4, "in_features": 3, "kind": "linear"}
    assignment = BitAssignment(modules={
        "bert.encoder.layer.0.attention.self.query": ModuleBits(4, (8, 4, 2, 0), **lin),
        "bert.encoder.layer.0.output.dense": ModuleBits(2, (0, 8), **lin),
        "bert.encoder.layer.1.attention.self.query": ModuleBits(4, (2, 2, 8, 8), **lin),
        "bert.embeddings.word_embeddings": ModuleBits(1, (8,), out_features=4, in_features=3, kind="embedding"),
    })
    rows = encoder_rows(assignment)
    assert [label for label, _ in rows] == ["L0 query", "L0 FFN out", "L1 query"]
    assert plot_bits(assignment, tmp_path / "bits_0.png", "trial 0").stat().st_size > 0
