"""Staged recipes: several QAT runs in order, each starting from the previous stage's student.

``cfg.staged.stages`` lists the earlier stages (the quant settings that differ from ``cfg.quant``); the
last stage is ``cfg.quant`` itself. Stage ``i`` runs in ``<results_dir>/runs/<name>/<i>-<stage name>``, the last
in ``<results_dir>/runs/<name>``, each with ``init_from`` the stage before it. A finished stage is reused
(``run_qat`` reuses a run of the same config), an interrupted one resumes from its checkpoint, so the
driver is resumable as a whole. Used by ``recipe=progressive`` (weights 8 -> 4 -> 2 bits, then activations)
and ``recipe=binarybert`` (ternary, then its TWS split to binary).

Example::

    metrics = run_staged(compose("qat", ["recipe=progressive"]))   # what ``amqs-qat recipe=progressive`` runs
"""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from amqs.train.qat import run_qat
from amqs.utils.run import run_dir, write_json

log = logging.getLogger(__name__)
_STAGE_KEYS = ("method", "weight_bits", "act_bits", "epochs", "train_examples", "steps", "dev_accuracy",
               "dev_accuracy_ptq", "encoder_bytes", "seconds")


def stage_configs(cfg: DictConfig) -> list[DictConfig]:
    """The QAT config of every stage, in order; the last is the recipe's own run.

    With ``staged.split_budget`` each of the ``n`` stages trains ``train.epochs / n``; stage ``i`` seeds its
    data order with ``train.seed + i`` so the stages see different batches.

    Example::

        [c.name for c in stage_configs(cfg)]  # ['sst2-progressive/1-w8', ..., 'sst2-progressive']
    """
    staged = cfg.staged
    if staged is None or not staged.stages:
        raise ValueError("staged.stages is empty: a staged recipe needs at least one earlier stage")
    names = [s.name for s in staged.stages]
    if len(set(names)) != len(names) or any(not n or "/" in n for n in names):
        raise ValueError(f"stage names must be unique, non-empty and without '/', got {names}")
    n = len(staged.stages) + 1
    epochs = cfg.train.epochs / n if staged.split_budget else cfg.train.epochs
    base = OmegaConf.to_container(cfg, resolve=True)  # freeze interpolations (name, quant.name) before editing
    base["staged"] = None
    configs = []
    prev = cfg.get("init_from")
    for i in range(n):
        c = OmegaConf.create(base)
        OmegaConf.set_struct(c, True)
        with open_dict(c):
            c.train.epochs = epochs
            c.train.seed = cfg.train.seed + i
            c.init_from = prev
            if i < n - 1:
                s = staged.stages[i]
                c.name = f"{cfg.name}/{i + 1}-{s.name}"
                c.quant.name = f"{cfg.quant.name}-{s.name}"
                if s.weight_bits is not None:
                    c.quant.weight_bits = s.weight_bits
                if s.act_bits is not None:
                    c.quant.act_bits = s.act_bits
                if s.tws is not None:
                    c.quant.tws = s.tws
        configs.append(c)
        prev = str(run_dir(c))
    return configs


def run_staged(cfg: DictConfig, command: str = "") -> dict[str, Any]:
    """Run (or reuse) every stage; return the last stage's metrics with the whole recipe's budget.

    ``train_examples``, ``epochs`` and ``seconds`` of the returned (and rewritten) metrics.json add up all
    stages; ``stages`` lists each stage's name, bits, epochs and dev accuracy.
    """
    return run_stages(stage_configs(cfg), command)


def run_stages(configs: list[DictConfig], command: str = "") -> dict[str, Any]:
    """Run (or reuse) the stage configs in order (each ``init_from`` the one before, as
    :func:`stage_configs` or amqs-replay chain them); the last run's metrics.json gets the recipe's summary."""
    results = []
    for i, c in enumerate(configs):
        log.info("stage %d/%d: %s (init_from=%s)", i + 1, len(configs), c.name, c.init_from)
        results.append(run_qat(c, command=command))
    final = summarize_stages(results)
    write_json(run_dir(configs[-1]) / "metrics.json", final)
    return final


def summarize_stages(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The last stage's metrics with ``stages`` and the whole recipe's ``train_examples``, ``epochs``, ``seconds``.

    """
    final = dict(results[-1])
    # A reused last stage already holds the summary: its own numbers are the summary's last entry.
    own = [*results[:-1], final["stages"][-1] if "stages" in final else final]
    stages = [{k: m[k] for k in _STAGE_KEYS} for m in own]
    final.update({
        "stages": stages,
        "train_examples": sum(m["train_examples"] for m in stages),
        "epochs": round(sum(m["epochs"] for m in stages), 6),
        "seconds": round(sum(m["seconds"] for m in stages), 1),
    })
    return final
