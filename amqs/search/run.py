"""One budget, end to end: supernet search -> derive -> retrain (QAT) -> evaluate.

``<paths.results_dir>/runs/<name>/`` gets:

- ``search_log.jsonl`` — every ``train.log_every`` steps: epoch, temperature, losses, expected /
  argmax / target encoder bytes, architecture entropy; ``checkpoint/`` while running;
- ``bits.json`` — the derived, repaired :class:`BitAssignment` (the only thing the retrain,
  the exporter and the reports read);
- ``retrain/`` — the QAT run of that assignment (``amqs.train.qat.run_qat``);
- ``metrics.json`` and ``config.yaml``.

Every phase may be killed at any instant (even ``kill -9``) and the run started again: the search
continues from its last checkpoint (weights, logits, both optimizers, scheduler, every rank's RNG
states, the Gumbel generator; sampler positions follow from the step) and ends with the weights an
uninterrupted run has, bit for bit; its log is cut back to the checkpoint's step first, so it holds
each step once. ``bits.json`` and ``metrics.json`` are written atomically; the retrain resumes from
its own checkpoint. A finished search is not redone.

The search runs on ``device`` (supernet, teacher and batches; the Gumbel noise is drawn on the CPU),
under torchrun on one shard per rank with gradients averaged by batch size (``amqs.utils.dist``).

Example::

    metrics = run_search(cfg)      # cfg composed from conf/search.yaml
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from amqs.data import load_glue, task_spec, make_loader
from amqs.quant import BitAssignment, pruned_fraction, weight_bits_of
from amqs.search.architect import Architect, ArchitectConfig, search_step, weight_optimizer
from amqs.search.derive import derived_assignment
from amqs.search.diagnostics import decision_metrics
from amqs.search.latency import LatencyTable, check_latency_budget
from amqs.search.objective import Budget, SearchObjective, ce_loss, resolve_budget
from amqs.search.space import SearchSpace, load_space
from amqs.search.supernet import (TemperatureSchedule, arch_entropy, arch_parameters, build_supernet,
                                  set_relaxation, supernet_modules)
from amqs.train.distill import DistillLoss
from amqs.train.loop import NonFiniteLossError, batches, rng_state, seed_everything, set_rng_state, truncate_log
from amqs.train.losses import LossFn
from amqs.train.precision import pin_precision, with_precision
from amqs.train.qat import check_init, lkd_start, load_teacher, pin_teacher, run_qat
from amqs.utils.dist import (all_gather_objects, all_reduce_weighted, average_buffers, barrier, init_distributed,
                             is_main, resolve_device, same_on_all_ranks)
from amqs.utils.cli import UserError
from amqs.utils.run import (checkpoint_stamp, config_hash, fingerprint, git_revision, prepare_run_dir, run_dir,
                            save_config, write_json)

log = logging.getLogger(__name__)

STATE_FILE = "search_state.pt"
LOG_FILE = "search_log.jsonl"

# Called at every search log point with the global step and the logged row (rank 0 only); an
# exception it raises (e.g. ``optuna.TrialPruned``) ends the search and propagates to the caller.
ProgressFn = Callable[[int, dict[str, Any]], None]


@dataclass
class _Search:
    """One process's search: the supernet, what trains it, and how far it got."""

    model: nn.Module
    objective: SearchObjective
    train_loss: LossFn  # the weights' loss (distillation), under the run's precision
    architect: Architect
    wopt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    gumbel: torch.Generator  # seeded alike on every rank: all ranks sample the same architecture
    total: int  # steps
    ckpt: Path  # the checkpoint file (rank 0 writes it, every rank reads it)
    device: torch.device
    step: int = 0
    seconds: float = 0.0  # search time so far, its prior and start included (a resumed run's earlier part too)
    start_choice: list[torch.Tensor] | None = None  # each logits row's argmax before the first step


def search(cfg: DictConfig, out: Path, on_progress: Optional[ProgressFn] = None) -> BitAssignment:
    """Train the supernet bilevel and return the derived, repaired assignment (resumable, exactly).

    Under torchrun every rank trains on its shard of both splits and gradients (weights and
    logits) are averaged by batch size, so all ranks hold the same supernet; rank 0 logs and
    checkpoints. ``on_progress(step, row)`` sees every logged row on rank 0 (pruning is for
    single-process runs: under torchrun an exception from it would stop rank 0 alone).
    """
    if check_method(cfg.search.method) == "hawq":
        from amqs.search.hawq import hawq_search  # no supernet training: sensitivity and an integer program

        return hawq_search(cfg)
    rank, world = init_distributed(cfg.device)
    device = resolve_device(cfg.device)
    seed_everything(cfg.train.seed)  # the logits' initial noise: the same on every rank
    splits = load_glue(cfg.data)
    teacher, tokenizer = load_teacher(cfg, task_spec(cfg.data).num_labels)
    model, space = search_supernet(cfg, teacher, device)
    objective = _objective(cfg, model, space)  # fails early on an infeasible budget
    _schedule(cfg)  # ... and on a bad schedule setting
    loaders = _loaders(cfg, splits, tokenizer, rank, world)
    s = _trainer(cfg, model, teacher, objective, len(loaders[0]), out / "checkpoint" / STATE_FILE, device)
    if not s.ckpt.exists():
        t0 = time.perf_counter()
        _prior(cfg, model, teacher, space, splits, tokenizer, device)
        _start_weights(cfg, model, teacher, splits, tokenizer, device)
        s.seconds = time.perf_counter() - t0  # (the prior and the start count as search time, as hawq's do)
        s.start_choice = [p.detach().argmax(-1).cpu() for p in arch_parameters(model)]
    _restore_or_start(s, cfg.train.seed, rank, world)
    if rank == 0:
        truncate_log(out / LOG_FILE, s.step)  # a killed run's rows after its checkpoint are redone
    _step_loop(cfg, s, *loaders, out / LOG_FILE, on_progress)
    return _derive(cfg, s, space, world)


METHODS = ("darts", "hawq")


def check_method(method: str) -> str:
    """``search.method``, validated (one of :data:`METHODS`)."""
    if method not in METHODS:
        raise UserError(f"search.method={method!r}: use one of {', '.join(METHODS)}")
    return method


def search_supernet(cfg: DictConfig, teacher: nn.Module, device: torch.device) -> tuple[nn.Module, SearchSpace]:
    """A copy of the teacher turned into the supernet of ``cfg.search.space``, on ``device``."""
    s = cfg.search
    space = load_space(s.space)
    model = copy.deepcopy(teacher)
    # init_bias: a uniform mix over {0,2,4,8} scales every weight by ~0.75; starting near the most
    # precise choice keeps the teacher's function, and the size loss walks subgroups down from there.
    build_supernet(model, space, init_std=s.init_std, init_bias=s.init_bias)  # on the CPU: the same logits anywhere
    set_relaxation(model, mode=s.relaxation)
    return model.to(device), space


PRIORS = ("none", "hawq")


def _prior(cfg: DictConfig, model: nn.Module, teacher: nn.Module, space: SearchSpace, splits: dict, tokenizer: Any,
           device: torch.device) -> None:
    """``search.prior=hawq``: the initial bias (``search.init_bias``) goes to each unit's choice in the exact HAWQ
    allocation of the budget (amqs.search.hawq: sensitivity x quantization noise) instead of its most precise
    choice, so the search starts from a budget-feasible, sensitivity-ranked architecture (how far it moves from it:
    ``moved_fraction``; at bias 2 on MiniLM, 1 subgroup of 4,608 -- docs/search.md). Computed on the teacher from
    the first batches of the whole train split: the same on every rank."""
    if cfg.search.prior not in PRIORS:
        raise UserError(f"search.prior={cfg.search.prior!r}: use one of {', '.join(PRIORS)}")
    if cfg.search.prior == "none":
        return
    from amqs.search.hawq import choice_rows, hawq_allocation

    alloc, meta = hawq_allocation(cfg, teacher, model, space, splits["train"], tokenizer, device)
    bias = cfg.search.init_bias
    with torch.no_grad():
        for p, _, rows in choice_rows(model, alloc.choice):
            p[:, -1] -= bias
            p[torch.arange(p.shape[0], device=p.device), rows.to(p.device)] += bias
    log.info("search prior: the HAWQ allocation (%d %s bytes, %s sensitivity)", math.ceil(meta["encoder_bits"] / 8),
             meta["size_scope"], meta["sensitivity"]["measure"])


def _start_weights(cfg: DictConfig, model: nn.Module, teacher: nn.Module, splits: dict, tokenizer: Any,
                   device: torch.device) -> None:
    """``train.init=lkd``: fit the supernet's weights (every candidate's latent weight, at the initial
    probabilities) to the teacher block by block before the search; ``rtn`` leaves them as they are.

    The calibration batches are the first of the whole train split (not a rank's shard), so every rank
    fits the same weights.
    """
    if check_init(cfg.train.init) == "rtn":
        return
    loader = make_loader(splits["train"], tokenizer, max_length=cfg.data.max_length,
                         batch_size=cfg.train.batch_size, shuffle=True, seed=cfg.train.seed,
                         progress=cfg.train.progress)
    fitted = lkd_start(cfg, model, teacher, loader, device, exclude=arch_parameters(model))
    log.info("supernet start: %d blocks reconstructed in %.0f s", len(fitted["blocks"]), fitted["seconds"])


def _objective(cfg: DictConfig, model: nn.Module, space: SearchSpace) -> SearchObjective:
    """The architecture loss ``CE + lam * L_size`` for the budget (``ValueError`` when it is infeasible)."""
    budget = search_budget(cfg)
    target = resolve_budget(budget, model, space.encoder_prefix)
    table, latency = None, cfg.budget.get("latency_ms")
    if latency is not None or cfg.search.get("latency_table"):
        if latency is None or not cfg.search.get("latency_table"):
            raise UserError("a latency budget needs both budget.latency_ms=<ms> and search.latency_table=<json> "
                            "(bench/latency_table.py build writes one)")
        table = LatencyTable.from_json(cfg.search.latency_table)
        check_latency_budget(table, model, float(latency), cfg.search.latency_table)
    return SearchObjective(target_bytes=target, lam=cfg.search.lam, eps=cfg.search.eps, task_loss=ce_loss,
                           encoder_prefix=budget.prefix(space.encoder_prefix), size_on=cfg.search.size_on,
                           entropy_weight=cfg.search.entropy_weight, latency_table=table,
                           latency_ms=None if latency is None else float(latency))


def _schedule(cfg: DictConfig) -> TemperatureSchedule:
    """The temperature schedule (the progress-dependent settings are checked here too, before any step)."""
    c = cfg.search
    if c.hard_from is not None and not 0 <= c.hard_from <= 1:
        raise UserError(f"search.hard_from={c.hard_from}: a fraction of the search in [0, 1], or null (never)")
    return TemperatureSchedule(t0=c.t0, eta=c.eta, n0=c.n0, t_min=c.t_min, t_final=c.t_final,
                               epochs=c.epochs if c.t_final is not None else None)


def _hard(model: nn.Module) -> bool:
    return any(m.hard for m in supernet_modules(model).values())


def _anneal(cfg: DictConfig, s: _Search) -> None:
    """What depends on the search's progress besides the temperature: hard samples from ``search.hard_from`` on,
    the entropy term's ramp (0 at the start, 1 at the end). A function of the step: a resumed run agrees."""
    progress = s.step / s.total
    hard_from = cfg.search.hard_from
    set_relaxation(s.model, hard=hard_from is not None and progress >= hard_from)
    s.objective.entropy_scale = progress


def search_budget(cfg: DictConfig) -> Budget:
    """The run's size budget (``cfg.budget``), as every search method reads it."""
    return Budget(cfg.budget.kind, float(cfg.budget.value))


def _loaders(cfg: DictConfig, splits: dict, tokenizer: Any, rank: int, world: int) -> tuple[DataLoader, DataLoader]:
    """Shuffled, resumable loaders of this rank's shard of the train and search-validation splits."""
    mk = lambda split, seed: make_loader(splits[split], tokenizer, max_length=cfg.data.max_length,  # noqa: E731
                                         batch_size=cfg.train.batch_size, shuffle=True, seed=seed,
                                         rank=rank, world_size=world, progress=cfg.train.progress)
    return mk("train", cfg.train.seed), mk("search_val", cfg.train.seed + 1)


def _trainer(cfg: DictConfig, model: nn.Module, teacher: nn.Module, objective: SearchObjective,
             steps_per_epoch: int, ckpt: Path, device: torch.device) -> _Search:
    """The losses, both optimizers, the scheduler and the Gumbel generator of a fresh search."""
    s, d = cfg.search, cfg.distill
    total = max(1, math.ceil(s.epochs * steps_per_epoch))
    precision = cfg.train.precision  # forward passes under bf16 autocast, or fp32 (amqs.train.precision)
    train_loss = with_precision(DistillLoss(teacher.to(device) if (d.kd_weight or d.hidden_weight) else None, d),
                                precision, device)
    arch_cfg = ArchitectConfig(**OmegaConf.to_container(s.arch, resolve=True))
    architect = Architect(model, val_loss=with_precision(objective, precision, device), train_loss=train_loss,
                          cfg=arch_cfg)
    wopt = weight_optimizer(model, s.weight_lr, cfg.train.weight_decay, fused=cfg.train.fused_optimizer)
    sched = get_linear_schedule_with_warmup(wopt, int(cfg.train.warmup_ratio * total), total)
    gumbel = torch.Generator().manual_seed(cfg.train.seed)  # a CPU generator: resample() moves the noise
    return _Search(model, objective, train_loss, architect, wopt, sched, gumbel, total, ckpt, device)


def _restore_or_start(s: _Search, seed: int, rank: int, world: int) -> None:
    """Continue exactly where the checkpoint left off, or seed this rank's dropout for a fresh start."""
    if not s.ckpt.exists():
        torch.manual_seed(seed + 1000 * rank)  # dropout differs across ranks; seeded once, at step 0
        return
    st = torch.load(s.ckpt, map_location="cpu", weights_only=False)  # RNG states must stay CPU tensors
    rngs = st.get("rng", [{"torch": st.get("torch_rng")}])  # (one process's, in older checkpoints)
    if len(rngs) != world:
        raise UserError(f"{s.ckpt} was made by {len(rngs)} process(es), this run has {world}: rerun with "
                           f"torchrun --nproc_per_node={len(rngs)}, or delete the checkpoint to start over")
    s.model.load_state_dict(st["model"])
    s.wopt.load_state_dict(st["wopt"])
    s.sched.load_state_dict(st["sched"])
    s.architect.load_state_dict(st["architect"])
    s.gumbel.set_state(st["gumbel_rng"])
    set_rng_state(rngs[rank], s.device)
    s.step, s.seconds = st["step"], st["seconds"]
    s.start_choice = st.get("start_choice")  # (absent in checkpoints that predate it)
    log.info("resumed the search from %s at step %d/%d", s.ckpt, s.step, s.total)


def _save_checkpoint(s: _Search) -> None:
    """Average the buffers, gather every rank's RNG states; rank 0 writes one file atomically."""
    average_buffers(s.model)  # activation ranges saw different shards
    rngs = all_gather_objects(rng_state(s.device))
    if not is_main():
        return
    s.ckpt.parent.mkdir(parents=True, exist_ok=True)
    tmp = s.ckpt.with_suffix(".tmp")
    torch.save({"model": s.model.state_dict(), "wopt": s.wopt.state_dict(), "sched": s.sched.state_dict(),
                "architect": s.architect.state_dict(), "gumbel_rng": s.gumbel.get_state(), "rng": rngs,
                "step": s.step, "seconds": s.seconds, "start_choice": s.start_choice}, tmp)
    os.replace(tmp, s.ckpt)  # a kill during the write leaves the previous checkpoint


def _step_loop(cfg: DictConfig, s: _Search, train_loader: DataLoader, val_loader: DataLoader, log_path: Path,
               on_progress: Optional[ProgressFn]) -> None:
    """Search steps from ``s.step`` to ``s.total``: log every ``log_every``, checkpoint every ``checkpoint_every``."""
    main, steps_per_epoch = is_main(), len(train_loader)
    schedule = _schedule(cfg)
    pairs = zip(batches(train_loader, s.step, s.device), batches(val_loader, s.step, s.device))
    bar = tqdm(total=s.total, initial=s.step, desc=f"search {cfg.name}", dynamic_ncols=True,
               disable=not (cfg.train.progress and main))
    t0, seconds_before = time.perf_counter(), s.seconds
    s.model.train()
    with open(log_path if main else os.devnull, "a") as logf:
        while s.step < s.total:
            tau = schedule(s.step / steps_per_epoch)
            _anneal(cfg, s)
            stats = _step(cfg, s, *next(pairs), tau, steps_per_epoch)
            s.step += 1
            s.seconds = seconds_before + time.perf_counter() - t0
            bar.update(1)
            bar.set_postfix(loss=f"{stats['train_loss']:.3f}", tau=f"{tau:.3f}")
            if s.step % cfg.train.log_every == 0 or s.step == s.total:
                row = {"step": s.step, "epoch": s.step / steps_per_epoch, "tau": tau, **stats,
                       **s.objective.stats(s.model), "hard": float(_hard(s.model))}
                logf.write(json.dumps(row) + "\n")
                logf.flush()
                if on_progress is not None and main:
                    on_progress(s.step, row)  # may raise (a pruned trial); the last checkpoint stays
                bar.set_postfix(loss=f"{stats['train_loss']:.3f}", tau=f"{tau:.3f}",
                                MB=f"{row['expected_bytes'] / 1e6:.2f}/{row['target_bytes'] / 1e6:.2f}")
            if cfg.train.checkpoint_every and s.step % cfg.train.checkpoint_every == 0 and s.step < s.total:
                _save_checkpoint(s)
    bar.close()


def _step(cfg: DictConfig, s: _Search, train_batch: dict, val_batch: dict, tau: float,
          steps_per_epoch: int) -> dict[str, float]:
    """One bilevel step; each gradient is averaged across ranks weighted by its batch's size."""
    s.architect.grad_hook = partial(all_reduce_weighted, count=len(val_batch["input_ids"]))
    stats = search_step(s.model, s.architect, s.wopt, train_batch, val_batch, step=s.step,
                        train_loss=s.train_loss, tau=tau, steps_per_epoch=steps_per_epoch,
                        max_grad_norm=cfg.train.max_grad_norm, scheduler=s.sched, generator=s.gumbel,
                        grad_hook=partial(all_reduce_weighted, count=len(train_batch["input_ids"])))
    if not all(math.isfinite(v) for v in stats.values()):
        raise NonFiniteLossError(f"search loss {stats} at step {s.step + 1}/{s.total}; the last checkpoint "
                                 f"({s.ckpt}) is kept. Lower search.weight_lr / search.arch.lr.")
    return stats


def _derive(cfg: DictConfig, s: _Search, space: SearchSpace, world: int) -> BitAssignment:
    """The trained supernet's derived, repaired assignment (the same on every rank), with the search's meta."""
    average_buffers(s.model)
    search_config = OmegaConf.to_container(cfg.search, resolve=True)
    assignment = derived_assignment(s.model, space, search_budget(cfg), eps=cfg.search.eps, search_config=search_config)
    if not same_on_all_ranks(int(fingerprint(assignment.to_dict()), 16) >> 1):
        raise RuntimeError("the ranks derived different assignments: their supernets diverged")
    meta = {**assignment.meta, "search_seconds": round(s.seconds, 1), "search_steps": s.total,
            "final_arch_entropy": arch_entropy(s.model), "world_size": world,
            **s.objective.decision(s.model),
            "moved_fraction": _moved_fraction(s)}
    return BitAssignment(modules=assignment.modules, scheme=assignment.scheme, act_bits=assignment.act_bits,
                         meta=meta)


def _moved_fraction(s: _Search) -> float | None:
    """Share of decision units whose argmax the search moved from where it started (the prior's, or the most
    precise choice): 0 means the search returned its start. None for a run resumed from an older checkpoint."""
    if s.start_choice is None:
        return None
    now = [p.detach().argmax(-1).cpu() for p in arch_parameters(s.model)]
    moved = sum(int((a != b).sum()) for a, b in zip(now, s.start_choice))
    return round(moved / sum(len(a) for a in now), 6)


def retrain_assignment(cfg: DictConfig, assignment: BitAssignment, folder: str, method: str,
                       command: str = "") -> dict[str, Any]:
    """QAT of ``assignment`` with the search's own retrain settings, in ``<paths.results_dir>/runs/<cfg.name>/<folder>``.

    The search's retrain, and any control of it (amqs.search.control), go through here, so they train with
    the same teacher, data, loss, activation settings, epochs and start (``reinit``: the pretrained encoder).
    ``method`` is the name its metrics carry.
    """
    retrain_cfg = cfg.copy()
    OmegaConf.set_struct(retrain_cfg, False)
    retrain_cfg.name = f"{cfg.name}/{folder}"
    retrain_cfg.quant.name = method
    retrain_cfg.overwrite = False
    init = cfg.model.source if cfg.reinit else None
    return run_qat(retrain_cfg, assignment, command=command, student_init=init)


def run_search(cfg: DictConfig, command: str = "", on_progress: Optional[ProgressFn] = None) -> dict[str, Any]:
    """Search, derive, retrain and evaluate one budget; returns (and writes) the run's metrics.

    ``on_progress(step, row)`` is called at each search log point (see :func:`search`); the
    retrain does not report. Example::

        metrics = run_search(cfg, on_progress=lambda step, row: print(step, row["train_loss"]))
    """
    cfg = pin_precision(pin_teacher(cfg), cfg.device)  # auto settings resolved: in the hash and the saved config
    out = run_dir(cfg)
    fp = config_hash(cfg)
    init_distributed(cfg.device)
    done = None
    if is_main():
        if cfg.overwrite and ((out / "metrics.json").exists() or checkpoint_stamp(out) not in (None, fp)):
            shutil.rmtree(out)  # a finished record or another config's run: its bits.json and retrain go too
        done = prepare_run_dir(out, fp, False)  # (a killed overwrite=true run of this config resumes)
    barrier()
    if done is not None or (out / "metrics.json").exists():
        log.info("reusing the finished run in %s", out)
        if is_main():
            shutil.rmtree(out / "checkpoint", ignore_errors=True)  # left by a kill just after metrics.json
        return done or json.loads((out / "metrics.json").read_text())
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    seed_everything(cfg.train.seed)
    bits_path = out / "bits.json"
    if bits_path.exists():  # the search finished before an interruption
        assignment = BitAssignment.from_json(bits_path)
    else:
        assignment = search(cfg, out, on_progress)
        if is_main():
            assignment.to_json(bits_path)
    if not is_main():
        return {}  # the retrain (a plain QAT run) is single-process: rank 0 does it
    save_config(cfg, out / "config.yaml")
    # The retrain is a plain QAT run of the fixed assignment, in its own folder.
    method = "search" if cfg.search.method == "darts" else cfg.search.method  # the retrain's method name
    retrain = retrain_assignment(cfg, assignment, "retrain", f"{method}-{cfg.search.space}", command=command)
    metrics = {**_search_metrics(cfg, assignment, retrain), "config_hash": fp, "git_revision": git_revision(),
               "command": command}
    write_json(out / "metrics.json", metrics)
    shutil.rmtree(out / "checkpoint", ignore_errors=True)
    return metrics


def _search_metrics(cfg: DictConfig, assignment: BitAssignment, retrain: dict[str, Any]) -> dict[str, Any]:
    """The search run's metrics: the retrained model's scores and sizes, the derived assignment's facts."""
    _, avg_bits = weight_bits_of(assignment)
    meta = assignment.meta
    return {
        **{k: retrain[k] for k in ("task", "teacher", "encoder_bytes", "total_bytes", "fp32_encoder_bytes",
                                   "fp32_total_bytes", "compression", "total_compression", "dev_accuracy", "dev_f1",
                                   "dev_accuracy_ptq", "search_val_accuracy", "search_val_f1", "train_examples")},
        "dev_macro_f1": retrain.get("dev_macro_f1"),  # (a retrain finished before it existed has none)
        "space": meta["space"], "budget_kind": cfg.budget.kind, "budget_value": cfg.budget.value,
        "size_scope": meta.get("size_scope", "encoder"),  # derived_encoder_bytes etc. measure this scope
        "target_bytes": meta["target_bytes"], "derived_encoder_bytes": meta["encoder_bytes"],
        "argmax_encoder_bytes": meta["argmax_encoder_bytes"], "repair_steps": meta["repair_steps"],
        "avg_bits": avg_bits, "pruned_fraction": pruned_fraction(assignment),
        **decision_metrics(meta),
        "search_seconds": meta.get("search_seconds"), "retrain_seconds": retrain["seconds"],
        "seconds": round((meta.get("search_seconds") or 0) + retrain["seconds"], 1),
        "method": cfg.search.method, "search_epochs": cfg.search.epochs if cfg.search.method == "darts" else 0,
        "retrain_epochs": cfg.train.epochs, "reinit": cfg.reinit,
        **{k: retrain.get(k) for k in ("provenance", "data_fingerprint")},  # the same process and data
    }
