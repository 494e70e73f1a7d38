"""Tests of the BitAssignment format: validation, JSON round-trip, uniform builder."""

from __future__ import annotations

import copy
import json
import os
import pickle
from pathlib import Path

import pytest
from transformers import BertForSequenceClassification

from amqs.quant.assignment import FORMAT_VERSION, BitAssignment, ModuleBits, uniform_assignment

from tests.tiny import tiny_bert



@pytest.fixture(scope="module")
def model() -> BertForSequenceClassification:
    return tiny_bert()


def _example() -> BitAssignment:
    return BitAssignment(
        modules={
            "bert.encoder.layer.0.attention.self.query": ModuleBits(4, (8, 4, 0, 32), 64, 64, "linear"),
            "bert.embeddings.word_embeddings": ModuleBits(1, (8,), 100, 64, "embedding"),
        },
        scheme="lsq",
        act_bits=4,
        meta={"budget": 3.5, "search": {"seed": 1, "layers": (0, 1)}, "note": "[1,2] kept verbatim"},
    )


def test_json_roundtrip(tmp_path: Path) -> None:
    a = _example()
    path = tmp_path / "bits.json"
    a.to_json(path)
    b = BitAssignment.from_json(path)
    assert b == a and b.to_dict() == a.to_dict()
    assert list(b.modules) == list(a.modules)  # order preserved
    assert b.meta["search"]["layers"] == [0, 1]  # tuples normalised to lists at construction
    assert b.meta["note"] == "[1,2] kept verbatim"
    text = path.read_text()
    assert '"bits": [8, 4, 0, 32]' in text  # integer lists stay on one line
    assert json.loads(text)["version"] == FORMAT_VERSION
    b.to_json(tmp_path / "again.json")
    assert (tmp_path / "again.json").read_text() == text



def test_to_json_replaces_the_file_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bits.json"
    _example().to_json(path)
    before = path.read_text()

    def killed_before_the_rename(src, dst):
        raise KeyboardInterrupt  # a kill between writing and renaming

    monkeypatch.setattr(os, "replace", killed_before_the_rename)
    with pytest.raises(KeyboardInterrupt):
        _example().with_bits({"bert.embeddings.word_embeddings": [4]}).to_json(path)
    assert path.read_text() == before  # never half a file
    monkeypatch.undo()
    _example().with_bits({"bert.embeddings.word_embeddings": [4]}).to_json(path)
    assert BitAssignment.from_json(path).modules["bert.embeddings.word_embeddings"].bits == (4,)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bits.json"]

def test_pickle_copy_hash() -> None:
    a = _example()
    assert pickle.loads(pickle.dumps(a)) == a and copy.deepcopy(a) == a
    assert hash(a) == hash(BitAssignment.from_dict(a.to_dict()))
    assert len({a, copy.deepcopy(a)}) == 1


def test_immutable() -> None:
    a = _example()
    with pytest.raises(AttributeError):
        a.scheme = "minmax"  # type: ignore[misc]
    with pytest.raises(TypeError):
        a.modules["x"] = ModuleBits(1, (8,), 4, 4)  # type: ignore[index]
    assert isinstance(a.modules["bert.embeddings.word_embeddings"].bits, tuple)


def test_module_bits_validation() -> None:
    assert ModuleBits(2, [8, 4], 4, 4).bits == (8, 4)  # lists are normalised to tuples
    with pytest.raises(ValueError, match="got 3 bit-widths for num_subgroups=2"):
        ModuleBits(2, (8, 8, 8), 4, 4)
    with pytest.raises(ValueError, match=r"invalid bit-width\(s\) \[3\]"):
        ModuleBits(2, (8, 3), 4, 4)
    with pytest.raises(ValueError, match="5 rows cannot be split into 2"):
        ModuleBits(2, (8, 8), 5, 4)
    with pytest.raises(ValueError, match="kind"):
        ModuleBits(1, (8,), 4, 4, "conv")
    with pytest.raises(ValueError, match="num_subgroups must be a positive int"):
        ModuleBits(0, (), 4, 4)


def test_from_dict_errors() -> None:
    good = _example().to_dict()

    def broken(**changes: object) -> dict:
        d = json.loads(json.dumps(good))
        d.update(changes)
        return d

    with pytest.raises(ValueError, match="unsupported BitAssignment version 2"):
        BitAssignment.from_dict(broken(version=2))
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['extra'\]"):
        BitAssignment.from_dict(broken(extra=1))
    d = broken()
    del d["scheme"]
    with pytest.raises(ValueError, match=r"missing key\(s\) \['scheme'\]"):
        BitAssignment.from_dict(d)
    with pytest.raises(ValueError, match="unknown scheme 'fp8'"):
        BitAssignment.from_dict(broken(scheme="fp8"))
    with pytest.raises(ValueError, match="act_bits"):
        BitAssignment.from_dict(broken(act_bits=1))
    d = broken()
    d["modules"]["bert.embeddings.word_embeddings"]["bits"] = [5]
    with pytest.raises(ValueError, match=r"module 'bert\.embeddings\.word_embeddings': invalid bit-width"):
        BitAssignment.from_dict(d)
    d = broken()
    d["modules"]["bert.embeddings.word_embeddings"]["bits"] = [8, 8]
    with pytest.raises(ValueError, match="got 2 bit-widths for num_subgroups=1"):
        BitAssignment.from_dict(d)
    d = broken()
    d["modules"]["bert.embeddings.word_embeddings"]["rows"] = 3
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['rows'\]"):
        BitAssignment.from_dict(d)
    with pytest.raises(ValueError, match="JSON-serializable"):
        BitAssignment(modules={}, meta={"x": object()})


def test_from_json_invalid_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        BitAssignment.from_json(path)


def test_with_bits() -> None:
    a = _example()
    name = "bert.encoder.layer.0.attention.self.query"
    b = a.with_bits({name: [2, 2, 2, 2]}, budget=2.0)
    assert b.modules[name].bits == (2, 2, 2, 2) and b.meta["budget"] == 2.0
    assert a.modules[name].bits == (8, 4, 0, 32)  # original untouched
    with pytest.raises(ValueError):
        a.with_bits({name: [2, 2]})
    with pytest.raises(KeyError):
        a.with_bits({"nope": [2]})


def test_uniform_assignment(model: BertForSequenceClassification) -> None:
    a = uniform_assignment(model, bits=4, num_subgroups=8, act_bits=8, meta={"origin": "test"})
    linears = [n for n, mb in a.modules.items() if mb.kind == "linear"]
    embeddings = [n for n, mb in a.modules.items() if mb.kind == "embedding"]
    assert len(linears) == 12 and len(embeddings) == 3
    assert "bert.pooler.dense" not in a.modules and "classifier" not in a.modules
    ffn_in = a.modules["bert.encoder.layer.1.intermediate.dense"]
    assert (ffn_in.out_features, ffn_in.in_features, ffn_in.num_subgroups) == (128, 64, 8)
    assert set(ffn_in.bits) == {4}
    assert a.modules["bert.embeddings.word_embeddings"] == ModuleBits(1, (8,), 100, 64, "embedding")
    assert a.meta == {"origin": "test"}


def test_uniform_assignment_subgroup_options(model: BertForSequenceClassification) -> None:
    a = uniform_assignment(model, bits=2, subgroup_size=16, embedding_patterns=())
    assert all(mb.rows_per_subgroup == 16 for mb in a.modules.values()) and len(a.modules) == 12
    assert a.modules["bert.encoder.layer.0.intermediate.dense"].num_subgroups == 8
    per_kind = {r".*intermediate\.dense": 2, r".*": 4}
    a = uniform_assignment(model, bits=8, num_subgroups=per_kind)
    assert a.modules["bert.encoder.layer.0.intermediate.dense"].num_subgroups == 2
    assert a.modules["bert.encoder.layer.0.output.dense"].num_subgroups == 4
    with pytest.raises(ValueError, match="either num_subgroups or subgroup_size"):
        uniform_assignment(model, num_subgroups=2, subgroup_size=4)
    with pytest.raises(ValueError, match=r"attention\.self\.query: 64 rows cannot be split into 5"):
        uniform_assignment(model, num_subgroups=5)
    with pytest.raises(ValueError, match="no key of the num_subgroups mapping"):
        uniform_assignment(model, num_subgroups={r".*query": 2})
    with pytest.raises(ValueError, match="matched no"):
        uniform_assignment(model, patterns=[r"bert\.encoder\.layer\.\d+\.nothing"])


def test_shuffle_bits_is_a_same_size_random_control() -> None:
    from amqs.quant import shuffle_bits
    from amqs.quant.size import weight_bits_of

    bits = tuple([0] * 40 + [2] * 30 + [4] * 20 + [8] * 38)
    a = BitAssignment(modules={"bert.encoder.q": ModuleBits(128, bits, 384, 16),
                               "bert.encoder.v": ModuleBits(128, bits[::-1], 384, 16),
                               "emb": ModuleBits(2, (8, 4), 4, 16, "embedding")}, meta={"space": "default"})
    s = shuffle_bits(a, seed=3)
    for name in ("bert.encoder.q", "bert.encoder.v"):
        assert sorted(s.modules[name].bits) == sorted(a.modules[name].bits) and s.modules[name].bits != a.modules[name].bits
    assert s.modules["emb"] == a.modules["emb"]  # embeddings kept
    assert weight_bits_of(s) == weight_bits_of(a)
    assert s == shuffle_bits(a, seed=3) and s != shuffle_bits(a, seed=4)
    assert s.meta["shuffled_from_seed"] == 3 and s.meta["space"] == "default"
