"""amqs.search.latency: the table's interpolation and the kept heads / neurons against what the export removes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from amqs.export.materialize import materialize
from amqs.quant import apply_assignment
from amqs.search.derive import derived_assignment
from amqs.models.family import canonical_name
from amqs.search.latency import LatencyTable, check_latency_budget, kept_counts
from amqs.search.space import load_space
from amqs.search.supernet import build_supernet, supernet_modules
from tests.export.test_materialize import calibrate
from tests.search.test_supernet import one_hot_logits
from tests.tiny import tiny_bert, tiny_model


def table(**kw) -> LatencyTable:
    """The tiny BERT's geometry: 2 layers, 4 heads, 128 FFN neurons."""
    d = dict(batch=1, length=8, threads=1, layers=2, num_heads=4, intermediate=128, full_ms=10.0,
             heads=(0, 2, 4), attn_ms=(4.0, 8.0, 10.0), neurons=(0, 64, 128), ffn_ms=(6.0, 7.0, 10.0))
    return LatencyTable(**{**d, **kw})


def test_prediction_interpolates_adds_layers_and_has_gradients() -> None:
    t = table()
    full = t.predict(torch.tensor([4.0, 4.0]), torch.tensor([128.0, 128.0]))
    assert full.item() == 10.0
    # every layer at 2 heads is the measured uniform variant; one layer at 2 heads is half its change
    assert t.predict(torch.tensor([2.0, 2.0]), torch.tensor([128.0, 128.0])).item() == pytest.approx(8.0)
    assert t.predict(torch.tensor([2.0, 4.0]), torch.tensor([128.0, 128.0])).item() == pytest.approx(9.0)
    h = torch.tensor([3.0, 4.0], requires_grad=True)
    f = torch.tensor([32.0, 128.0], requires_grad=True)
    pred = t.predict(h, f)
    assert pred.item() == pytest.approx(10 + (9.0 - 10) / 2 + (6.5 - 10) / 2)
    pred.backward()
    assert h.grad.tolist() == pytest.approx([1.0 / 2, 1.0 / 2]) and f.grad[0].item() == pytest.approx(1 / 64 / 2)


def test_bad_tables_fail_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="heads must be >= 2 ascending points ending at 4"):
        table(heads=(0, 2), attn_ms=(1.0, 2.0))
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"batch": 1}))
    with pytest.raises(ValueError, match="not a latency table"):
        LatencyTable.from_json(path)
    path.write_text(json.dumps(table().to_dict()))
    assert LatencyTable.from_json(path) == table()


def commit_random(model: torch.nn.Module, space, seed: int, edit=lambda name, bits: bits) -> None:
    """Build the supernet of ``space`` and commit every subgroup to a random choice (``edit(name, bits)`` may change
    a module's), by one-hot logits."""
    build_supernet(model, space)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, m in supernet_modules(model).items():
            c = m.choices.tolist()
            bits = [c[i] for i in torch.randint(0, len(c), (m.num_subgroups,), generator=gen).tolist()]
            m.arch_logits.copy_(one_hot_logits(edit(name, bits), tuple(c)))


@pytest.mark.parametrize("space_name", ["default", "structured"])
def test_committed_counts_are_what_the_export_keeps(space_name: str) -> None:
    model = tiny_bert()
    space = load_space(space_name)

    def heads_0_and_1_removed(name: str, bits: list[int]) -> list[int]:
        if name.endswith("layer.0.attention.self.value") or name.endswith("layer.0.attention.self.query"):
            return [0] * (len(bits) // 2) + bits[len(bits) // 2:]
        return bits

    commit_random(model, space, 0, heads_0_and_1_removed)
    heads, neurons = kept_counts(model, table())
    student = tiny_bert()
    apply_assignment(student, derived_assignment(model, space))
    arrays = materialize(calibrate(student))
    assert heads.tolist() == [float(ly.num_heads) for ly in arrays.layers]
    assert neurons.tolist() == [float(ly.inter.shape[0]) for ly in arrays.layers]
    assert heads[0] <= 2


def test_expected_counts_are_differentiable_in_the_logits() -> None:
    model = tiny_bert()
    build_supernet(model, load_space("default"))
    heads, neurons = kept_counts(model, table())
    assert 0 < heads[0] < 4 and 0 < neurons[0] < 128  # near-uniform logits: a quarter of the rows pruned
    table().predict(heads, neurons).backward()
    v = supernet_modules(model)["bert.encoder.layer.0.attention.self.value"]
    assert v.arch_logits.grad is not None and v.arch_logits.grad[:, 0].abs().sum() > 0


def test_table_builder_and_check_on_tiny_exports(tmp_path_factory: pytest.TempPathFactory, glue_dir: Path) -> None:
    """bench/latency_table.py build -> a LatencyTable of the tiny geometry; check -> one row per export."""
    import subprocess
    import sys

    import pandas as pd

    from tests.conftest import REPO
    from tests.test_runtime import tiny_exports

    tiny = tiny_exports(tmp_path_factory, glue_dir)
    out = tmp_path_factory.mktemp("latency")
    script = [sys.executable, str(REPO / "bench" / "latency_table.py")]
    subprocess.run(script + ["build", "--model", str(tiny.root / "teachers" / "bert-tiny-sst2" / "model"), "--out",
                             str(out), "--name", "tiny", "--shapes", "1x16", "--threads", "1", "--rounds", "2",
                             "--warmup", "1"], check=True, cwd=REPO, capture_output=True)
    table = LatencyTable.from_json(out / "tiny-1x16-t1.json")
    assert (table.layers, table.num_heads, table.intermediate, table.heads[-1]) == (2, 4, 128, 4)
    assert all(ms > 0 for ms in table.attn_ms + table.ffn_ms)  # values, not their order: 2 rounds are noise
    subprocess.run(script + ["check", "--table", str(out / "tiny-1x16-t1.json"), str(tiny.quant_export), "--random",
                             "1", "--rounds", "2", "--warmup", "1"], check=True, cwd=REPO, capture_output=True)
    rows = pd.read_csv(out / "check.csv")
    assert len(rows) == 2 and rows.loc[0, "heads"] == 7  # the tiny export removed one head of layer 0
    # timings of 2 rounds are noise: only that every row has a finite prediction, measurement and error
    assert rows[["predicted_over_full", "measured_over_full", "error"]].notna().all().all()
    assert (rows["measured_over_full"] > 0).all()  # a ratio of times; the prediction of a 2-round table may be
    # anything (full + the mean of its variants' deltas, each as noisy as the full model's time under load)


@pytest.mark.parametrize("model_type", ["roberta", "distilbert"])
def test_other_families_count_what_their_export_keeps(model_type: str) -> None:
    """The value / FFN-in matrices are found by their BERT spelling (DistilBERT: v_lin, ffn.lin1)."""
    model = tiny_model(model_type)
    space = load_space("structured")
    commit_random(model, space, 1, lambda name, bits: [0] * len(bits)  # every head of layer 1 (tied Q/K/V)
                  if canonical_name(name).endswith("layer.1.attention.self.value") else bits)
    heads, neurons = kept_counts(model, table())
    check_latency_budget(table(), model, 9.0)  # the model's geometry is the table's (DistilBERT's hidden_dim)
    student = tiny_model(model_type)
    apply_assignment(student, derived_assignment(model, space))
    arrays = materialize(calibrate(student))
    assert heads.tolist() == [float(ly.num_heads) for ly in arrays.layers] and heads[1] == 0
    assert neurons.tolist() == [float(ly.inter.shape[0]) for ly in arrays.layers]
