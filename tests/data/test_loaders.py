from __future__ import annotations

import datasets
import torch

from amqs.data import make_loader
from amqs.models import load_tokenizer
from amqs.train import ResumableSampler


def _ds(pair: bool) -> datasets.Dataset:
    a = ["a short one", "a much longer sentence with many more words in it than the first", "mid length text"]
    b = ["second", "another", "third text"] if pair else [None] * 3
    return datasets.Dataset.from_dict({"text_a": a, "text_b": b, "label": [0, 1, 0]})


def test_dynamic_padding_to_longest_in_batch_and_cap() -> None:
    tok = load_tokenizer("embedded:minilm")
    loader = make_loader(_ds(False), tok, max_length=8, batch_size=3, shuffle=False)
    batch = next(iter(loader))
    assert batch["input_ids"].shape == (3, 8)  # longest truncated to max_length
    loader = make_loader(_ds(False).select([0]), tok, max_length=64, batch_size=1, shuffle=False)
    batch = next(iter(loader))
    assert batch["input_ids"].shape == (1, 5)  # [CLS] a short one [SEP]: no padding to 64
    assert batch["labels"].tolist() == [0]


def test_pairs_get_segment_ids() -> None:
    tok = load_tokenizer("embedded:minilm")
    batch = next(iter(make_loader(_ds(True), tok, max_length=64, batch_size=3, shuffle=False)))
    assert batch["token_type_ids"].max() == 1 and set(batch) >= {"input_ids", "attention_mask", "labels"}


def test_resumable_sampler_skips_within_epoch_and_reshuffles() -> None:
    s = ResumableSampler(10, seed=1)
    full = list(s)
    s.set_epoch(0, skip=4)
    assert list(s) == full[4:] and len(s) == 6
    s.set_epoch(1)
    assert sorted(s) == list(range(10)) and list(s) != full
    assert torch.equal(torch.tensor(list(ResumableSampler(10, seed=1))), torch.tensor(full))
