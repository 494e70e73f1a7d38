"""A latency model of the exported model, differentiable in the architecture probabilities (as FBNet's).

An amqs export computes in int8 whatever the stored bits (``amqs.export.graph``), so an architecture changes its
latency only through what the export removes: the attention heads whose value rows are all pruned, and the
pruned FFN neurons (``amqs.export.materialize.remove_heads`` / ``remove_ffn_neurons``). With ``h_l`` heads and
``f_l`` FFN neurons kept in layer ``l`` of ``L``:

    T = T_full + sum_l (A(h_l) - T_full) / L + sum_l (F(f_l) - T_full) / L

``A(h)`` (``F(f)``) is the measured latency of the whole model with *every* layer at ``h`` heads (``f`` neurons)
and the rest full, piecewise linear between the measured points: a :class:`LatencyTable`, measured on the backend
for one shape (batch x length) and thread count by ``bench/latency_table.py``. The layers are assumed to add up
(each contributes 1/L of a uniform change); ``bench/latency_table.py --check`` measures how well that predicts
real exports.

In the search, ``h_l`` and ``f_l`` are their expectations under the choice probabilities (:func:`kept_counts`):
``E[h_l] = sum_heads (1 - prod_(g in head) p_prune[g])`` over the value matrix's subgroups that hold the head's
rows, ``E[f_l] = sum_g rows_g (1 - p_prune[g])`` over ``intermediate.dense``; with one-hot probabilities these are
the counts the export keeps.

Example::

    table = LatencyTable.from_json("results/latency/minilm-1x128-t1.json")
    heads, neurons = kept_counts(supernet, table)           # differentiable in the logits
    table.predict(heads, neurons)                           # expected latency, ms
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from amqs.models.family import canonical_name, family_of
from amqs.search.supernet import supernet_modules

# BERT-spelled (amqs.models.family): the searched modules are looked up by their BERT spelling in every family
VALUE = "bert.encoder.layer.{}.attention.self.value"
INTER = "bert.encoder.layer.{}.intermediate.dense"


@dataclass(frozen=True)
class LatencyTable:
    """Measured whole-model latencies (ms) of uniform variants: every layer at ``heads[i]`` heads (``attn_ms[i]``)
    or at ``neurons[j]`` FFN neurons (``ffn_ms[j]``), the rest full; ``full_ms`` the unpruned model."""

    batch: int
    length: int
    threads: int
    layers: int
    num_heads: int
    intermediate: int
    full_ms: float
    heads: tuple[int, ...]
    attn_ms: tuple[float, ...]
    neurons: tuple[int, ...]
    ffn_ms: tuple[float, ...]
    meta: dict[str, Any] = field(default_factory=dict, compare=False)  # model, cpu, command, rounds

    def __post_init__(self) -> None:
        for xs, ys, top, what in ((self.heads, self.attn_ms, self.num_heads, "heads"),
                                  (self.neurons, self.ffn_ms, self.intermediate, "neurons")):
            if len(xs) != len(ys) or len(xs) < 2 or list(xs) != sorted(set(xs)) or xs[-1] != top:
                raise ValueError(f"latency table: {what} must be >= 2 ascending points ending at {top}, each with "
                                 f"a latency; got {list(xs)} / {list(ys)}")

    def predict(self, heads: Tensor, neurons: Tensor) -> Tensor:
        """Latency (ms) of a model with ``heads[l]`` heads and ``neurons[l]`` FFN neurons kept per layer
        (``[L]`` tensors, fractional in the search); differentiable in both.

        Example:
            >>> t = LatencyTable(1, 8, 1, 2, 4, 8, 10.0, (0, 4), (6.0, 10.0), (0, 8), (8.0, 10.0))
            >>> t.predict(torch.tensor([4.0, 2.0]), torch.tensor([8.0, 0.0])).item()  # 10 - 1 - 1
            8.0
        """
        a = _interp(heads.double(), self.heads, self.attn_ms) - self.full_ms
        f = _interp(neurons.double(), self.neurons, self.ffn_ms) - self.full_ms
        return self.full_ms + (a.sum() + f.sum()) / self.layers

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, path: str | Path) -> "LatencyTable":
        """Read a table written by ``bench/latency_table.py`` (one clear line if it is not one)."""
        try:
            d = json.loads(Path(path).read_text())
            return cls(**{**d, **{k: tuple(d[k]) for k in ("heads", "attn_ms", "neurons", "ffn_ms")}})
        except (OSError, json.JSONDecodeError, TypeError, KeyError) as e:
            raise ValueError(f"{path}: not a latency table (bench/latency_table.py writes them): {e}") from None


def _interp(x: Tensor, xp: tuple[int, ...], fp: tuple[float, ...]) -> Tensor:
    """Piecewise-linear interpolation of ``(xp, fp)`` at ``x`` (clamped to the measured range), differentiable."""
    xs, ys = torch.tensor(xp, dtype=x.dtype), torch.tensor(fp, dtype=x.dtype)
    x = x.clamp(xs[0], xs[-1])
    i = torch.searchsorted(xs, x.detach(), right=True).clamp(1, len(xs) - 1)
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def kept_counts(model: nn.Module, table: LatencyTable,
                probs: Callable[[nn.Module], Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """Expected kept heads and FFN neurons per layer (``[L]`` each) of a supernet under ``probs(module)``
    (default: ``softmax(alpha)``, what the search commits to); a layer whose value / intermediate matrix is not
    searched (or has no prune choice) keeps everything.

    Example:
        >>> heads, neurons = kept_counts(supernet, table)  # doctest: +SKIP
    """
    probs = probs or (lambda m: m.choice_probs())
    mods = {canonical_name(n): m for n, m in supernet_modules(model).items()}
    heads, neurons = [], []
    for layer in range(table.layers):
        v, inter = mods.get(VALUE.format(layer)), mods.get(INTER.format(layer))
        heads.append(_kept_heads(v, probs, table.num_heads) if _prunable(v) else torch.tensor(float(table.num_heads)))
        neurons.append(_kept_rows(inter, probs) if _prunable(inter) else torch.tensor(float(table.intermediate)))
    return torch.stack(heads).double(), torch.stack(neurons).double()


def check_latency_budget(table: LatencyTable, model: nn.Module, target_ms: float, source: str = "") -> None:
    """One clear line unless ``table`` describes ``model``'s geometry and ``target_ms`` lies between the fastest
    architecture the space allows (every prunable head and neuron removed) and the full model.

    Example:
        >>> check_latency_budget(table, supernet, 12.0)  # doctest: +SKIP
    """
    cfg = model.config
    geometry = (cfg.num_hidden_layers, cfg.num_attention_heads, family_of(model).ffn_size(cfg))
    if geometry != (table.layers, table.num_heads, table.intermediate):
        raise ValueError(f"search.latency_table={source}: measured for (layers, heads, FFN) = "
                         f"{(table.layers, table.num_heads, table.intermediate)}, the model has {geometry}")
    gone = lambda m: one_hot_probs(m, torch.zeros(m.num_subgroups, dtype=torch.long))  # noqa: E731  all pruned
    fastest = float(table.predict(*kept_counts(model, table, gone)))
    if not fastest <= target_ms <= table.full_ms:
        raise ValueError(f"budget.latency_ms={target_ms} is outside the feasible range [{fastest:.3f}, "
                         f"{table.full_ms:.3f}] ms of this space at {table.batch}x{table.length}, "
                         f"{table.threads} thread(s) (search.latency_table={source})")


def one_hot_probs(m: nn.Module, index: Tensor) -> Tensor:
    """Probabilities ``[G, C]`` of a searched module that pick choice ``index[g]`` for certain (for
    :func:`kept_counts`: a committed architecture)."""
    return torch.nn.functional.one_hot(index.to(m.arch_logits.device), m.arch_logits.shape[1]).double()


def _prunable(m: nn.Module | None) -> bool:
    return m is not None and int(m.choices[0]) == 0


def _kept_rows(m: nn.Module, probs: Callable[[nn.Module], Tensor]) -> Tensor:
    rows = m.weight.shape[0] // m.num_subgroups
    return rows * (1 - probs(m)[:, 0].double()).sum()


def _kept_heads(v: nn.Module, probs: Callable[[nn.Module], Tensor], num_heads: int) -> Tensor:
    """``sum_heads (1 - prod p_prune)`` over the value subgroups that hold each head's rows (a subgroup may
    straddle two heads: it then counts in both)."""
    p_prune = probs(v)[:, 0].double()
    rows, per = v.weight.shape[0], v.weight.shape[0] // v.num_subgroups
    head_dim = rows // num_heads
    gone = [p_prune[h * head_dim // per:((h + 1) * head_dim - 1) // per + 1].prod() for h in range(num_heads)]
    return num_heads - torch.stack(gone).sum()


__all__ = ["LatencyTable", "check_latency_budget", "kept_counts", "one_hot_probs"]
