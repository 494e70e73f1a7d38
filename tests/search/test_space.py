"""Search spaces: the shipped YAMLs load and apply (tiny BERT, MiniLM geometry); bad ones fail clearly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from transformers import BertConfig, BertForSequenceClassification

from amqs.search.space import SPACES_DIR, SpaceError, list_spaces, load_space, lookup_choice, space_from_dict
from amqs.search.supernet import arch_groups, build_supernet
from tests.tiny import MINILM, tiny_bert

ENC = r"bert\.encoder\.layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense|intermediate\.dense|output\.dense)"


def good(**top: object) -> dict:
    d = {"version": 1, "name": "t", "choices": [0, 2, 4],
         "groups": [{"name": "enc", "modules": ENC, "subgroups": {"count": 8}}]}
    d.update(top)
    return d


def test_shipped_spaces_load() -> None:
    assert {"aqbert", "default", "structured"} <= set(list_spaces())
    aq, default, st = load_space("aqbert"), load_space("default"), load_space("structured")
    assert aq.choices == (0, 2, 4) and aq.scheme == "minmax" and aq.act_bits == 8 and aq.embedding_bits == 8
    assert aq.groups[0].subgroups.count == 128
    assert default.choices == (0, 2, 4, 8)
    assert [g.name for g in st.groups] == ["heads", "ffn_neurons", "residual"]
    assert st.groups[2].choices == (2, 4, 8) and st.groups[0].subgroups.per_head
    assert load_space(SPACES_DIR / "aqbert.yaml") == aq  # by path too


def test_spaces_apply_to_tiny_bert() -> None:
    model = tiny_bert()
    plans = {name: load_space(name).plan(model) for name in ("aqbert", "default", "structured")}
    for plan in plans.values():
        assert len(plan) == 12  # 6 Linears x 2 layers
    # count 128 means "at most 128": min(128, rows) on the 64-row tiny model
    g = {sm.name: sm.num_subgroups for sm in plans["aqbert"]}
    assert g["bert.encoder.layer.0.attention.self.query"] == 64 and g["bert.encoder.layer.0.intermediate.dense"] == 128
    st = {sm.name: sm for sm in plans["structured"]}
    q, k = st["bert.encoder.layer.1.attention.self.query"], st["bert.encoder.layer.1.attention.self.key"]
    assert q.num_subgroups == 4 and q.tie_key == k.tie_key == "bert.encoder.layer.1.attention.self.*"
    assert st["bert.encoder.layer.0.intermediate.dense"].num_subgroups == 8  # 128 rows / 16
    assert st["bert.encoder.layer.0.output.dense"].choices == (2, 4, 8)
    build_supernet(model, load_space("structured"))
    assert len(arch_groups(model)) == 2 * 4  # per layer: tied QKV, FFN, 2 residual outputs


def test_ternary_space_is_structured_layout_with_twn() -> None:
    """search_spaces/ternary.yaml: the structured layout (removable heads / FFN blocks) with TWN 2-bit."""
    st, tern = load_space("structured"), load_space("ternary")
    assert tern.scheme == "twn" and st.scheme == "minmax"
    assert tern.groups == st.groups and tern.choices == st.choices
    model = tiny_bert()
    assert [(sm.name, sm.num_subgroups, sm.choices, sm.tie_key) for sm in tern.plan(model)] == \
        [(sm.name, sm.num_subgroups, sm.choices, sm.tie_key) for sm in st.plan(model)]
    names = build_supernet(model, tern)
    mods = dict(model.named_modules())
    assert names and {mods[n].scheme for n in names} == {"twn"}


def test_spaces_apply_to_minilm_geometry() -> None:
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(**MINILM))
    aq = {sm.name: sm.num_subgroups for sm in load_space("aqbert").plan(model)}
    assert len(aq) == 36 and set(aq.values()) == {128}
    st = {sm.name: sm.num_subgroups for sm in load_space("structured").plan(model)}
    assert st["bert.encoder.layer.5.attention.self.value"] == 12  # per head
    assert st["bert.encoder.layer.5.intermediate.dense"] == 96  # 1536 / 16
    names = build_supernet(model, load_space("structured"))
    assert len(names) == 36 and len(arch_groups(model)) == 6 * 4


def test_choice_registry() -> None:
    assert lookup_choice(0).name == "prune" and lookup_choice("int8").bits == 8
    with pytest.raises(ValueError, match="bad choice 3"):
        lookup_choice(3)
    with pytest.raises(ValueError, match="bad choice"):
        lookup_choice(True)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (good(colour="red"), r"unknown key\(s\) \['colour'\]"),
        (good(version=2), "version: unsupported search-space version 2"),
        (good(choices=[0, 3]), r"choices: bad choice 3"),
        (good(choices=[4, 4]), "duplicate choices"),
        (good(scheme="log"), "scheme: unknown 'log'"),
        (good(embedding_bits=5), "embedding_bits: bad choice 5"),
        (good(groups=[{"name": "x", "modules": ENC, "subgroups": {"count": 8}, "tye": "a"}]),
         r"groups\[0\]: unknown key\(s\) \['tye'\]"),
        (good(groups=[{"name": "x", "modules": ENC, "subgroups": {"count": 8, "size": 4}}]),
         "exactly one of count / size / per_head"),
        (good(groups=[{"name": "x", "modules": ENC, "subgroups": {"count": -1}}]), "count: expected a positive int"),
        (good(groups=[{"name": "x", "modules": "bert(", "subgroups": {"count": 8}}]), "invalid regex"),
        (good(groups=[{"name": "x", "modules": ENC, "subgroups": {"count": 8}, "tie": "query"}]),
         "exactly one capture group"),
    ],
)
def test_bad_space_files(tmp_path: Path, data: dict, match: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SpaceError, match=match) as err:
        load_space(path)
    assert str(path) in str(err.value)  # the file is named


@pytest.mark.parametrize(
    ("group", "match"),
    [
        ({"name": "x", "modules": r"bert\.encoder\.layer\.\d+\.nothing", "subgroups": {"count": 8}},
         r"groups\[0\] \(x\)\.modules: pattern .* matches no nn.Linear"),
        ({"name": "x", "modules": ENC, "subgroups": {"count": 3}}, r"subgroups: .*query: count: 3 .* 64 rows"),
        ({"name": "x", "modules": ENC, "subgroups": {"size": 48}}, r"subgroups: .* size: 48 rows"),
        ({"name": "x", "modules": r"bert\.encoder\.layer\.0\.(attention\.self\.query|intermediate\.dense)",
          "subgroups": {"count": 4}, "tie": r"layer\.0\.(attention\.self\.query|intermediate\.dense)"},
         "share tie key .* differ in shape"),
        ({"name": "x", "modules": ENC, "subgroups": {"count": 4}, "tie": r"(query)"}, "tie: .* does not occur"),
    ],
)
def test_space_not_fitting_the_model(group: dict, match: str) -> None:
    space = space_from_dict(good(groups=[group]), source="inline.yaml")
    with pytest.raises(SpaceError, match=match) as err:
        space.plan(tiny_bert())
    assert "inline.yaml" in str(err.value)


def test_first_group_wins_and_shadowed_group_fails() -> None:
    shadowed = good(groups=[
        {"name": "all", "modules": ENC, "subgroups": {"count": 8}},
        {"name": "ffn", "modules": r"bert\.encoder\.layer\.\d+\.intermediate\.dense", "subgroups": {"count": 2}},
    ])
    with pytest.raises(SpaceError, match=r"groups\[1\] \(ffn\).*already claimed"):
        space_from_dict(shadowed).plan(tiny_bert())
    ordered = good(groups=list(reversed(shadowed["groups"])))
    plan = {sm.name: sm for sm in space_from_dict(ordered).plan(tiny_bert())}
    assert plan["bert.encoder.layer.0.intermediate.dense"].num_subgroups == 2
    assert plan["bert.encoder.layer.0.output.dense"].group == "all"


def test_missing_space_lists_known() -> None:
    with pytest.raises(FileNotFoundError, match="aqbert"):
        load_space("nope")
