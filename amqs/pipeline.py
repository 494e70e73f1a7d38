"""``amqs-pipeline``: the main job end to end, into one folder of its own.

    amqs-pipeline experiment=quickstart          # SST-2, MiniLM, small slices: about 10 minutes on 2 CPU cores
    amqs-pipeline budget=c13 paths.results_dir=outputs/c13 data.max_train_examples=16000 search.epochs=0.5
    amqs-pipeline debug=smoke                    # the tiny random BERT, seconds (tests)

Stages, each a function below. Rerun the same command after a kill: the teacher and the search (with its
retrain) continue from their checkpoints or are reused when finished; export and bench, minutes at most, are
redone.

1. **teacher** — ``teacher=auto`` (the default here) takes the shared teacher of this model and task, or one
   amqs-finetune wrote before; when there is none it fine-tunes one with search-val held out;
2. **search** — ``amqs-search``: supernet search, derive, retrain, evaluate (a row of ``search.csv``);
3. **export** — ``amqs-export`` of the retrained model, with the dev parity check (a row of ``exports.csv``);
4. **bench** — ``amqs-bench``: PyTorch fp32 (the teacher), ONNX Runtime fp32, ONNX Runtime int8 (its usual
   dynamic recipe) and the export, interleaved, at each shape and thread count (``bench.csv``, ``bench.md``);
5. **report** — ``REPORT.md`` (and ``bits.png``): what was made, how good, how small, how fast, and what each
   stage cost (this invocation's wall clock, and the training time the search and retrain recorded).

Everything goes under ``paths.results_dir`` (``outputs/quickstart`` for the quickstart); ``pipeline.json``
holds the stages' seconds and results.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable

import hydra
import pandas as pd
import yaml
import torch
from omegaconf import DictConfig, OmegaConf

from amqs.config import CONF_DIR, FinetuneConfig, register_configs
from amqs.utils.cli import user_errors
from amqs.utils.dist import resolve_device
from amqs.utils.run import check_results_dir, check_writable, command_line, git_revision, write_json

log = logging.getLogger("amqs.pipeline")

REPORT_FILE = "REPORT.md"
STATE_FILE = "pipeline.json"


def run(cfg: DictConfig, command: str = "amqs-pipeline") -> dict[str, Any]:
    """Run (or resume) every stage; returns what ``pipeline.json`` holds."""
    if cfg.get("pipeline") is None:
        raise ValueError("amqs.pipeline.run needs the pipeline section (compose conf/pipeline.yaml)")
    if cfg.get("outer") is not None:
        raise ValueError("amqs-pipeline runs one search; an Optuna study is amqs-search outer=...")
    root = Path(cfg.paths.results_dir)
    resolve_device(cfg.device)  # refused before any stage when absent
    check_results_dir(root, smoke=cfg.smoke, model_source=cfg.model.source)
    check_writable(root / STATE_FILE)
    state: dict[str, Any] = {"command": command, "git_revision": git_revision(), "seconds": {}}
    timed = _timer(state)
    state["teacher"] = timed("teacher", lambda: teacher_stage(cfg))
    cfg.teacher.source = state["teacher"]["source"]
    state["search"] = timed("search", lambda: search_stage(cfg, command))
    if cfg.pipeline.export:
        state["export"] = timed("export", lambda: export_stage(cfg, command))
        if cfg.pipeline.bench:
            state["bench"] = timed("bench", lambda: bench_stage(cfg, Path(state["export"]["dir"]), command))
    write_json(root / STATE_FILE, state)
    report = write_pipeline_report(cfg, state)
    log.info("done: %s", report)
    print(f"amqs-pipeline: {report}")
    return state


def _timer(state: dict[str, Any]) -> Callable[[str, Callable[[], Any]], Any]:
    def timed(stage: str, fn: Callable[[], Any]) -> Any:
        log.info("stage %s ...", stage)
        t0 = time.perf_counter()
        out = fn()
        state["seconds"][stage] = round(time.perf_counter() - t0, 1)
        return out
    return timed


def teacher_stage(cfg: DictConfig) -> dict[str, Any]:
    """The teacher ``teacher.source`` names (``auto``: the best one found), fine-tuned first when there is none."""
    from amqs.finetune import run as finetune
    from amqs.train.qat import AUTO_TEACHER, resolve_teacher

    made = None
    if cfg.teacher.source == AUTO_TEACHER:
        try:
            resolve_teacher(cfg)
        except FileNotFoundError:
            log.info("no teacher for %s on %s: fine-tuning one (search-val held out)", cfg.model.name, cfg.data.task)
            made = finetune(teacher_config(cfg), command="amqs-pipeline (its teacher)")
    source = resolve_teacher(cfg)
    return {"source": source, "fine_tuned_here": made is not None, **_teacher_record(Path(source), made)}


def teacher_config(cfg: DictConfig) -> DictConfig:
    """The amqs-finetune config of the teacher the pipeline makes: the model and data of the search, the
    fine-tuning recipe of conf/train/finetune.yaml, search-val held out."""
    recipe = yaml.safe_load((CONF_DIR / "train" / "finetune.yaml").read_text())  # a config group option
    train = OmegaConf.merge(recipe, {
        "epochs": cfg.pipeline.teacher_epochs, "use_search_val": False, "num_threads": cfg.train.num_threads,
        "progress": cfg.train.progress})
    cap = cfg.pipeline.teacher_max_train_examples
    data = OmegaConf.merge(cfg.data, {"max_train_examples": cfg.data.max_train_examples if cap is None else cap})
    base = OmegaConf.structured(FinetuneConfig)
    return OmegaConf.merge(base, {"model": cfg.model, "data": data, "train": train, "paths": cfg.paths,
                                  "device": cfg.device, "smoke": cfg.smoke})


def _teacher_record(source: Path, made: dict[str, Any] | None) -> dict[str, Any]:
    """The teacher's dev metrics from its metrics.json (beside its weights or one folder up), when it has one."""
    import json

    if made is None:
        for path in (source / "metrics.json", source.parent / "metrics.json"):
            if path.is_file():
                made = json.loads(path.read_text())
                break
    made = made or {}
    return {k: made.get(k) for k in ("dev_accuracy", "dev_f1", "search_val", "train_examples", "command")}


def search_stage(cfg: DictConfig, command: str) -> dict[str, Any]:
    """amqs-search of one budget: search, derive, retrain, evaluate (reused when finished)."""
    from amqs.search.app import run as search

    return search(cfg, command=command)


def export_stage(cfg: DictConfig, command: str) -> dict[str, Any]:
    """amqs-export of the retrained model into ``<results_dir>/exports/<name>``, with the dev parity check."""
    from amqs.export.app import export_run
    from amqs.utils.run import run_dir

    out = Path(cfg.paths.results_dir) / "exports" / cfg.name
    facts = export_run(run_dir(cfg), out, threads=cfg.train.num_threads, results_dir=Path(cfg.paths.results_dir),
                       command=command)
    return {"dir": str(out), **facts}


def bench_stage(cfg: DictConfig, export_dir: Path, command: str) -> list[dict[str, Any]]:
    """amqs-bench of the export against the teacher (PyTorch fp32, ORT fp32, ORT int8), per thread count."""
    from amqs.bench import bench_against_fp32, parse_shape, write_report
    from amqs.train.qat import load_teacher
    from amqs.data.glue import task_spec

    p = cfg.pipeline
    teacher, tokenizer = load_teacher(cfg, task_spec(cfg.data).num_labels)
    teacher.eval()
    shapes = [parse_shape(s) for s in p.bench_shapes]
    work = Path(cfg.paths.results_dir) / "exports" / "bench"
    frames = []
    for threads in p.bench_threads:
        frames.append(bench_against_fp32(teacher, tokenizer, cfg.data, {"searched": export_dir}, work=work,
                                         shapes=shapes, threads=threads, warmup=p.bench_warmup,
                                         rounds=p.bench_rounds, evaluate=p.bench_eval, source=cfg.teacher.source))
    df = pd.concat(frames, ignore_index=True)
    write_report(df, Path(cfg.paths.results_dir), threads=",".join(map(str, p.bench_threads)),
                 warmup=p.bench_warmup, rounds=p.bench_rounds, command=command)
    return df.to_dict(orient="records")


def write_pipeline_report(cfg: DictConfig, state: dict[str, Any]) -> Path:
    """``REPORT.md`` (and ``bits.png``) in the pipeline's folder."""
    from amqs.report.pipeline import render_report

    return render_report(cfg, state, Path(cfg.paths.results_dir) / REPORT_FILE)


register_configs()


@hydra.main(config_path=str(CONF_DIR), config_name="pipeline", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    with user_errors("amqs-pipeline"):
        if cfg.train.num_threads:
            torch.set_num_threads(cfg.train.num_threads)
        run(cfg, command=command_line("amqs-pipeline", HydraConfig.get().overrides.task))


if __name__ == "__main__":
    main()
