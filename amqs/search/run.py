"""One budget, end to end: supernet search -> derive -> retrain (QAT) -> evaluate.

``results/runs/<name>/`` gets:

- ``search_log.jsonl`` — every ``train.log_every`` steps: epoch, temperature, losses, expected /
  argmax / target encoder bytes, architecture entropy; ``checkpoint/`` while running;
- ``bits.json`` — the derived, repaired :class:`BitAssignment` (the only thing the retrain,
  the exporter and the reports read);
- ``retrain/`` — the QAT run of that assignment (``amqs.train.qat.run_qat``);
- ``metrics.json`` and ``config.yaml``.

Each phase resumes: a killed search continues from its last checkpoint (weights, logits, both
optimizers, scheduler, RNG and sampler positions); a finished search is not redone.

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
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from amqs.data import get_task, load_glue, make_loader
from amqs.quant import BitAssignment, weight_bits_of
from amqs.search.architect import Architect, ArchitectConfig, search_step, weight_optimizer
from amqs.search.derive import derived_assignment
from amqs.search.objective import Budget, SearchObjective, ce_loss, resolve_budget
from amqs.search.space import load_space
from amqs.search.supernet import TemperatureSchedule, arch_entropy, build_supernet, set_relaxation
from amqs.train.distill import DistillLoss
from amqs.train.loop import NonFiniteLossError, ResumableSampler, seed_everything
from amqs.train.qat import load_teacher, run_qat
from amqs.utils.dist import all_reduce_mean, average_buffers, barrier, init_distributed, is_main, same_on_all_ranks
from amqs.utils.run import config_hash, fingerprint, git_revision, prepare_run_dir, save_config, write_json

log = logging.getLogger(__name__)

STATE_FILE = "search_state.pt"

# Called at every search log point with the global step and the logged row (rank 0 only); an
# exception it raises (e.g. ``optuna.TrialPruned``) ends the search and propagates to the caller.
ProgressFn = Callable[[int, dict[str, Any]], None]


def run_dir(cfg: DictConfig) -> Path:
    return Path(cfg.paths.results_dir) / "runs" / cfg.name


def _cycle(loader: DataLoader, start_step: int) -> Iterator[dict[str, torch.Tensor]]:
    """Endless batches of ``loader``, epoch after epoch, starting at global batch ``start_step``."""
    sampler = loader.sampler
    n = len(loader)
    epoch, skip = divmod(start_step, n)
    while True:
        if isinstance(sampler, ResumableSampler):
            sampler.set_epoch(epoch, skip=skip * loader.batch_size)
        yield from loader
        epoch, skip = epoch + 1, 0


def search(cfg: DictConfig, out: Path, on_progress: Optional[ProgressFn] = None) -> BitAssignment:
    """Train the supernet bilevel and return the derived, repaired assignment (resumable).

    Under torchrun every rank trains on its shard of both splits and gradients (weights and
    logits) are averaged, so all ranks hold the same supernet; rank 0 logs and checkpoints.
    ``on_progress(step, row)`` sees every logged row on rank 0 (pruning is for single-process
    runs: under torchrun an exception from it would stop rank 0 alone).
    """
    s = cfg.search
    rank, world = init_distributed(cfg.device)
    main = rank == 0
    seed_everything(cfg.train.seed)  # the logits' initial noise: the same on every rank
    task = get_task(cfg.data.task)
    splits = load_glue(cfg.data)
    teacher, tokenizer = load_teacher(cfg, task.num_labels)
    space = load_space(s.space)
    model = copy.deepcopy(teacher)
    # init_bias: a uniform mix over {0,2,4,8} scales every weight by ~0.75; starting near the most
    # precise choice keeps the teacher's function, and the size loss walks subgroups down from there.
    build_supernet(model, space, init_std=s.init_std, init_bias=s.init_bias)
    budget = Budget(cfg.budget.kind, float(cfg.budget.value))
    target = resolve_budget(budget, model, space.encoder_prefix)  # fails early on an infeasible budget
    mk = lambda split, seed: make_loader(splits[split], tokenizer, max_length=cfg.data.max_length,  # noqa: E731
                                         batch_size=cfg.train.batch_size, shuffle=True, seed=seed,
                                         rank=rank, world_size=world)
    train_loader, val_loader = mk("train", cfg.train.seed), mk("search_val", cfg.train.seed + 1)
    steps_per_epoch = len(train_loader)
    total = max(1, math.ceil(s.epochs * steps_per_epoch))
    d = cfg.distill
    train_loss = DistillLoss(teacher if (d.kd_weight or d.hidden_weight) else None, d)
    objective = SearchObjective(target_bytes=target, lam=s.lam, eps=s.eps, task_loss=ce_loss,
                                encoder_prefix=space.encoder_prefix)
    arch_cfg = ArchitectConfig(**OmegaConf.to_container(s.arch, resolve=True))
    architect = Architect(model, val_loss=objective, train_loss=train_loss, cfg=arch_cfg)
    architect.grad_hook = all_reduce_mean  # no-op in a single process
    wopt = weight_optimizer(model, s.weight_lr, cfg.train.weight_decay)
    sched = get_linear_schedule_with_warmup(wopt, int(cfg.train.warmup_ratio * total), total)
    schedule = TemperatureSchedule(t0=s.t0, eta=s.eta, n0=s.n0, t_min=s.t_min)
    set_relaxation(model, mode=s.relaxation)
    gumbel = torch.Generator().manual_seed(cfg.train.seed)

    ckpt = out / "checkpoint"  # stamped with the config hash by prepare_run_dir
    state_path = ckpt / STATE_FILE
    step, seconds_before = 0, 0.0
    if state_path.exists():
        st = torch.load(state_path, weights_only=False)
        model.load_state_dict(st["model"])
        wopt.load_state_dict(st["wopt"])
        sched.load_state_dict(st["sched"])
        architect.load_state_dict(st["architect"])
        torch.set_rng_state(st["torch_rng"])
        gumbel.set_state(st["gumbel_rng"])
        step, seconds_before = st["step"], st["seconds"]
        log.info("resumed the search from %s at step %d/%d", state_path, step, total)
    torch.manual_seed(cfg.train.seed + 1000 * rank + step)  # dropout differs across ranks
    train_iter, val_iter = _cycle(train_loader, step), _cycle(val_loader, step)
    log_path = out / "search_log.jsonl"
    t0 = time.perf_counter()
    bar = tqdm(total=total, initial=step, desc=f"search {cfg.name}", disable=not (cfg.train.progress and main),
               dynamic_ncols=True)
    model.train()
    with open(log_path if main else os.devnull, "a") as logf:
        while step < total:
            epoch = step / steps_per_epoch
            tau = schedule(epoch)
            stats = search_step(model, architect, wopt, next(train_iter), next(val_iter), step=step,
                                train_loss=train_loss, tau=tau, steps_per_epoch=steps_per_epoch,
                                max_grad_norm=cfg.train.max_grad_norm, scheduler=sched, generator=gumbel,
                                grad_hook=all_reduce_mean)
            if not all(math.isfinite(v) for v in stats.values()):
                raise NonFiniteLossError(f"search loss {stats} at step {step + 1}/{total}; the last checkpoint "
                                         f"({state_path}) is kept. Lower search.weight_lr / search.arch.lr.")
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{stats['train_loss']:.3f}", tau=f"{tau:.3f}")
            if step % cfg.train.log_every == 0 or step == total:
                row = {"step": step, "epoch": step / steps_per_epoch, "tau": tau, **stats, **objective.stats(model)}
                logf.write(json.dumps(row) + "\n")
                logf.flush()
                if on_progress is not None and main:
                    on_progress(step, row)  # may raise (a pruned trial); the last checkpoint stays
                bar.set_postfix(loss=f"{stats['train_loss']:.3f}", tau=f"{tau:.3f}",
                                MB=f"{row['expected_bytes'] / 1e6:.2f}/{target / 1e6:.2f}")
            if cfg.train.checkpoint_every and step % cfg.train.checkpoint_every == 0 and step < total:
                average_buffers(model)  # activation ranges saw different shards
                if not main:
                    continue
                ckpt.mkdir(parents=True, exist_ok=True)
                tmp = state_path.with_suffix(".tmp")
                torch.save({"model": model.state_dict(), "wopt": wopt.state_dict(), "sched": sched.state_dict(),
                            "architect": architect.state_dict(), "torch_rng": torch.get_rng_state(),
                            "gumbel_rng": gumbel.get_state(), "step": step,
                            "seconds": seconds_before + time.perf_counter() - t0}, tmp)
                os.replace(tmp, state_path)
    bar.close()
    average_buffers(model)
    search_config = OmegaConf.to_container(s, resolve=True)
    assignment = derived_assignment(model, space, budget, eps=s.eps, search_config=search_config)
    if not same_on_all_ranks(int(fingerprint(assignment.to_dict()), 16) >> 1):
        raise RuntimeError("the ranks derived different assignments: their supernets diverged")
    meta = {**assignment.meta, "search_seconds": round(seconds_before + time.perf_counter() - t0, 1),
            "search_steps": total, "final_arch_entropy": arch_entropy(model), "world_size": world}
    return BitAssignment(modules=assignment.modules, scheme=assignment.scheme, act_bits=assignment.act_bits,
                         meta=meta)


def retrain_assignment(cfg: DictConfig, assignment: BitAssignment, folder: str, method: str,
                       command: str = "") -> dict[str, Any]:
    """QAT of ``assignment`` with the search's own retrain settings, in ``results/runs/<cfg.name>/<folder>``.

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


def pruned_fraction(assignment: BitAssignment) -> float:
    """Fraction of searched (linear) weights whose subgroup is pruned."""
    lin = [m for m in assignment.modules.values() if m.kind == "linear"]
    total = sum(m.num_weights for m in lin)
    pruned = sum(m.rows_per_subgroup * m.in_features * sum(b == 0 for b in m.bits) for m in lin)
    return pruned / total if total else 0.0


def run_search(cfg: DictConfig, command: str = "", on_progress: Optional[ProgressFn] = None) -> dict[str, Any]:
    """Search, derive, retrain and evaluate one budget; returns (and writes) the run's metrics.

    ``on_progress(step, row)`` is called at each search log point (see :func:`search`); the
    retrain does not report. Example::

        metrics = run_search(cfg, on_progress=lambda step, row: print(step, row["train_loss"]))
    """
    out = run_dir(cfg)
    fp = config_hash(cfg)
    init_distributed(cfg.device)
    done = None
    if is_main():
        if cfg.overwrite and out.exists():
            shutil.rmtree(out)  # search, bits.json and retrain all belong to the old config
        done = prepare_run_dir(out, fp, False)
    barrier()
    if done is not None or (out / "metrics.json").exists():
        log.info("reusing the finished run in %s", out)
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
    retrain = retrain_assignment(cfg, assignment, "retrain", f"search-{cfg.search.space}", command=command)
    total_bits, avg_bits = weight_bits_of(assignment)
    meta = assignment.meta
    metrics = {
        **{k: retrain[k] for k in ("task", "teacher", "encoder_bytes", "total_bytes", "fp32_encoder_bytes",
                                   "compression", "total_compression", "dev_accuracy", "dev_f1", "dev_accuracy_ptq",
                                   "search_val_accuracy", "search_val_f1", "train_examples")},
        "space": meta["space"], "budget_kind": cfg.budget.kind, "budget_value": cfg.budget.value,
        "target_bytes": meta["target_bytes"], "derived_encoder_bytes": meta["encoder_bytes"],
        "argmax_encoder_bytes": meta["argmax_encoder_bytes"], "repair_steps": meta["repair_steps"],
        "avg_bits": avg_bits, "pruned_fraction": pruned_fraction(assignment),
        "search_seconds": meta.get("search_seconds"), "retrain_seconds": retrain["seconds"],
        "seconds": round((meta.get("search_seconds") or 0) + retrain["seconds"], 1),
        "search_epochs": cfg.search.epochs, "retrain_epochs": cfg.train.epochs, "reinit": cfg.reinit,
        "config_hash": fp, "git_revision": git_revision(), "command": command,
        **{k: retrain.get(k) for k in ("provenance", "data_fingerprint")},  # the same process and data
    }
    write_json(out / "metrics.json", metrics)
    shutil.rmtree(out / "checkpoint", ignore_errors=True)
    return metrics
