from __future__ import annotations

import math

import datasets
import pytest
import torch
from torch.utils.data import DistributedSampler

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


@pytest.mark.parametrize("n,world", [(10, 1), (65, 2), (10, 3), (2, 4)])
def test_resumable_sampler_pads_shards_like_distributed_sampler(n: int, world: int) -> None:
    perm = list(ResumableSampler(n, seed=3))  # the epoch's permutation (one process: never padded)
    assert sorted(perm) == list(range(n))
    for rank in range(world):
        shard = list(ResumableSampler(n, seed=3, rank=rank, world_size=world))
        # DistributedSampler without shuffling yields positions in that permutation.
        positions = list(DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=False))
        assert shard == [perm[i] for i in positions]
        assert len(shard) == len(ResumableSampler(n, seed=3, rank=rank, world_size=world)) == math.ceil(n / world)
        s = ResumableSampler(n, seed=3, rank=rank, world_size=world)
        s.set_epoch(0, skip=1)
        assert list(s) == shard[1:] and len(s) == len(shard) - 1


@pytest.mark.parametrize("progress", [True, False])
def test_tokenizing_prints_a_progress_bar_only_with_progress_on(progress: bool, capfd: pytest.CaptureFixture) -> None:
    """train.progress=false silences the datasets library's map bar ("tokenize: 100%|...") and leaves the global
    setting as it was."""
    tok = load_tokenizer("embedded:minilm")
    capfd.readouterr()
    batch = next(iter(make_loader(_ds(True), tok, max_length=16, batch_size=3, shuffle=False, progress=progress)))
    assert batch["input_ids"].shape[0] == 3
    assert ("tokenize:" in capfd.readouterr().err) == progress
    assert not datasets.are_progress_bars_disabled()
