"""Tokenization and DataLoaders with dynamic padding.

Each batch is padded only to its own longest sequence (capped at ``max_length``): on SST-2,
whose sentences average ~25 tokens, that is several times less compute than padding to 128.

Example::

    loader = make_loader(splits["train"], tokenizer, max_length=64, batch_size=32, shuffle=True, seed=0)
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import datasets
import torch
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from amqs.train.loop import ResumableSampler


@contextmanager
def progress_bars(enabled: bool) -> Iterator[None]:
    """The ``datasets`` library's progress bars (``Dataset.map``'s) off inside the block unless ``enabled``
    (``train.progress``); the global setting is restored after it, and bars a user turned off stay off.

    Example:
        >>> with progress_bars(False):
        ...     datasets.are_progress_bars_disabled()
        True
    """
    if enabled or datasets.are_progress_bars_disabled():
        yield
        return
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        datasets.enable_progress_bars()


def tokenize(ds: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, max_length: int,
             progress: bool = True) -> datasets.Dataset:
    """Tokenize ``text_a`` (and ``text_b`` when present) without padding; keeps ``label``. ``progress=False``
    (``train.progress``) prints no progress bar.

    Example:
        >>> ds = datasets.Dataset.from_dict({"text_a": ["a film"], "text_b": [None], "label": [1]})
        >>> from amqs.models import load_tokenizer
        >>> tokenize(ds, load_tokenizer("embedded:minilm"), 8, progress=False)[0]["input_ids"]
        [101, 1037, 2143, 102]
    """
    pair = any(t is not None for t in ds[:1]["text_b"])

    def encode(batch: dict[str, list[Any]]) -> dict[str, Any]:
        if pair:
            return tokenizer(batch["text_a"], batch["text_b"], truncation=True, max_length=max_length)
        return tokenizer(batch["text_a"], truncation=True, max_length=max_length)

    with progress_bars(progress):
        out = ds.map(encode, batched=True, remove_columns=["text_a", "text_b"], desc="tokenize")
    return out.rename_column("label", "labels")


def make_loader(
    ds: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_length: int,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
) -> DataLoader:
    """A DataLoader of padded batches (``input_ids``, ``attention_mask``, ``token_type_ids``, ``labels``; no
    ``token_type_ids`` from the tokenizer of a model without token types: :func:`amqs.models.loading.fit_tokenizer`).

    ``rank``/``world_size`` shard a shuffled loader across torchrun processes; ``progress=False``
    (``train.progress``) tokenizes without a progress bar.
    """
    tokenized = tokenize(ds, tokenizer, max_length, progress)
    tokenized.set_format("torch")
    return DataLoader(
        tokenized,
        batch_size=batch_size,
        # A seeded sampler that can start mid-epoch, so a killed run resumes exactly.
        sampler=ResumableSampler(len(tokenized), seed, rank, world_size) if shuffle else None,
        # Its own generator keeps DataLoader's per-epoch seed draw off the global RNG, whose
        # state a checkpoint restores (dropout masks then replay exactly after a resume).
        generator=torch.Generator().manual_seed(seed),
        collate_fn=DataCollatorWithPadding(tokenizer, padding="longest"),
    )
