"""Training orchestration: the resumable loop and evaluation."""

from amqs.train.loop import FitResult, NonFiniteLossError, ResumableSampler, fit, seed_everything
from amqs.train.metrics import evaluate, predict

__all__ = ["FitResult", "NonFiniteLossError", "ResumableSampler", "evaluate", "fit", "predict", "seed_everything"]
