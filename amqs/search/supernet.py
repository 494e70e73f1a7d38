"""The supernet: every searched Linear (and searched embedding table) mixes its candidate bit-widths per
subgroup (AQ-BERT).

For subgroup ``g`` (a block of output rows; of a table's rows for an embedding) with architecture logits ``alpha[g, :]`` over the
choices ``c`` (bit-widths, ascending), the layer uses

    W_mix[g] = sum_c p[g, c] * Q_c(W[g]),    p = softmax((alpha + gumbel_noise) / tau)

with ``Q_0 = 0`` (pruned). For the straight-through schemes (all but ``lsq``) the candidates are constants
of the mix (:class:`_MixCandidates`: ``dW = sum_c p[g, c] dW_mix``, ``dp[g, c] = <dW_mix[g], Q_c(W[g])>``,
bit for bit what autograd gives through the candidates' graph, without forming a ``[C, G, n]`` gradient);
each is one :func:`amqs.quant.functions.quantize_subgroups` call on the ``[G, n]`` subgroup view (a working set
of one matrix: several times faster than one call on the view repeated to ``[C*G, n]``) and the prune
candidate is a zero block, never quantized. Within :func:`shared_candidates` (one search step) they are
computed once while the weight is unchanged: the architecture and the weight step share them. LSQ (learned
steps, which need the candidates' graph) quantizes all ``C`` candidates in one call on ``[C*G, n]``.
Input activations of Linears are fake-quantized at fixed bits (:class:`~amqs.quant.modules.ActQuant`);
embedding tables that are not searched are fixed by :func:`build_supernet` through ``apply_assignment``.

Relaxation modes: ``"gumbel"`` (Gumbel-softmax; the noise is drawn by :func:`resample`, once per
step for every logits tensor, and only used in training mode) and ``"softmax"`` (no noise). The
derived architecture is the argmax of the logits (:mod:`~amqs.search.derive`). Tied modules hold the
*same* logits Parameter, so they always see the same probabilities.

Example::

    names = build_supernet(model, load_space("aqbert"))
    set_relaxation(model, mode="gumbel", tau=TemperatureSchedule(t0=1.0, eta=2.0)(epoch))
    resample(model)                       # once per training step
    loss = model(**batch).loss
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from amqs.quant.assignment import BitAssignment, ModuleBits
from amqs.quant.functions import SCHEMES, init_lsq_step, quantize_subgroups, to_subgroups, validate_bits
from amqs.quant.modules import ActQuant
from amqs.quant.size import qparam_bits
from amqs.quant.surgery import apply_assignment
from amqs.quant.targets import select_modules
from amqs.search.space import SearchSpace

MODES = ("gumbel", "softmax")


@dataclass(frozen=True)
class TemperatureSchedule:
    """AQ-BERT's temperature ``t0 * exp(-eta * (epoch - n0))``, held at ``t0`` before ``n0``, floored at ``t_min``.

    ``t0`` and ``eta`` (per epoch) have no defaults here: their one home is the search config
    (``amqs.config.SearchHParams``, ``conf/search/*.yaml``); ``epoch`` may be fractional.

    Example:
        >>> round(TemperatureSchedule(t0=5.0, eta=0.5, n0=1.0)(3.0), 4)
        1.8394
        >>> TemperatureSchedule(t0=1.0, eta=0.0, t_final=0.1, epochs=0.5)(0.5)  # over the search's length
        0.1
    """

    t0: float
    eta: float
    n0: float = 0.0
    t_min: float = 0.05
    # Set both for a schedule over the search's length instead of per epoch: geometric from t0 (at n0) to
    # t_final at ``epochs`` (the search's length), whatever the number of epochs or steps; eta is then unused.
    t_final: float | None = None
    epochs: float | None = None

    def __call__(self, epoch: float) -> float:
        if self.t_final is not None:
            if not self.t_final > 0:
                raise ValueError(f"search.t_final must be > 0, got {self.t_final}")
            if not self.epochs or self.epochs <= self.n0:
                raise ValueError(f"a t_final schedule needs the search's length in epochs > n0, got {self.epochs}")
            progress = min(1.0, max(0.0, epoch - self.n0) / (self.epochs - self.n0))
            return max(self.t_min, self.t0 * (self.t_final / self.t0) ** progress)
        return max(self.t_min, self.t0 * math.exp(-self.eta * max(0.0, epoch - self.n0)))


class _MixCandidates(torch.autograd.Function):
    """``W_mix[g] = sum_c p[g, c] q[c, g]`` with ``q`` constant (the candidates, no graph) and the
    straight-through gradient to the subgroup view ``wg`` of the weight from the choices ``c >= kept``.

    Forward and both gradients are computed as autograd computed them through the candidates' graph, bit for
    bit (the same einsums, the weight gradient summed over the candidates in order), without a ``[C, G, n]``
    gradient. The prune candidate stays in ``q`` as a zero block: the einsums' rounding depends on ``C``.
    """

    @staticmethod
    def forward(ctx, wg: Tensor, p: Tensor, q: Tensor, kept: int) -> Tensor:  # noqa: D102
        ctx.save_for_backward(p, q)
        ctx.kept = kept
        return torch.einsum("gc,cgn->gn", p, q)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:  # noqa: D102
        p, q = ctx.saved_tensors
        dw = dp = None
        if ctx.needs_input_grad[0]:
            dw = grad * p[:, ctx.kept, None]
            for c in range(ctx.kept + 1, p.shape[1]):
                dw = dw + grad * p[:, c, None]
        if ctx.needs_input_grad[1]:
            dp = torch.einsum("gn,cgn->gc", grad, q)
        return dw, dp, None, None


class _MixedChoices:
    """The search state and the mix of a searched matrix ``weight[rows, cols]`` (a Linear's or an embedding
    table's), split into ``num_subgroups`` blocks of rows: shared by :class:`SupernetLinear` and
    :class:`SupernetEmbedding`, which differ only in how they use the mixed weight."""

    weight: nn.Parameter

    def _init_search(self, choices: tuple[int, ...], num_subgroups: int, scheme: str,
                     arch_logits: nn.Parameter | None, init_std: float) -> None:
        rows, cols = self.weight.shape
        if rows % num_subgroups:
            raise ValueError(f"{rows} rows cannot be split into {num_subgroups} equal subgroups")
        if list(choices) != sorted(set(choices)):
            raise ValueError(f"choices must be distinct and ascending, got {choices}")
        validate_bits(list(choices), f"{type(self).__name__} choices")
        if scheme not in SCHEMES:
            raise ValueError(f"unknown scheme {scheme!r}; expected one of {SCHEMES}")
        self.scheme, self.mode, self.tau, self.hard = scheme, "gumbel", 1.0, False
        self.num_subgroups, num_choices = num_subgroups, len(choices)
        # Search state lives with the weight (from_* builds on "meta", then moves it with .to()).
        here = None if self.weight.is_meta else self.weight.device
        if arch_logits is None:
            # Small random logits (DARTS): an all-zero start would make every argmax "prune".
            arch_logits = nn.Parameter(init_std * torch.randn(num_subgroups, num_choices, device=here))
        if tuple(arch_logits.shape) != (num_subgroups, num_choices):
            raise ValueError(f"arch_logits must be [{num_subgroups}, {num_choices}], got {tuple(arch_logits.shape)}")
        self.arch_logits = arch_logits
        c = torch.tensor(choices, dtype=torch.int64, device=here)
        size = rows // num_subgroups * cols * c + qparam_bits(scheme, c)  # same rule as amqs.quant.size
        # Non-persistent: derived from the space, so not checkpointed nor counted by model_size.
        self.register_buffer("choices", c, persistent=False)
        self.register_buffer("size_table", size.expand(num_subgroups, -1).clone(), persistent=False)
        self.register_buffer("_bits_flat", c.repeat_interleave(num_subgroups), persistent=False)  # [C*G], c-major
        self._kept = 1 if choices[0] == 0 else 0  # choices[_kept:] are computed; the prune choice (0) never is
        self.share_candidates = False  # set by shared_candidates(): reuse the candidates while the weight is unchanged
        self._shared: tuple[tuple[int, int], Tensor] | None = None  # ((weight data_ptr, version), candidates)
        if scheme == "lsq":  # one learned step per (choice, subgroup), initialised by _adopt
            self.step = nn.Parameter(torch.ones(num_choices * num_subgroups, device=here))
        else:
            self.register_parameter("step", None)
        self.noise: Tensor | None = None  # Gumbel noise of the current step, set by resample()

    def _adopt(self, source: nn.Module) -> None:
        """Take ``source``'s weight (and bias) Parameter objects; move the search state next to them."""
        self.weight = source.weight
        if hasattr(source, "bias"):
            self.bias = source.bias
        self.to(source.weight.device)  # moves only the small search state
        if self.step is not None:
            with torch.no_grad():
                self.step.copy_(init_lsq_step(self._candidates_view(), self._bits_flat))
        self.train(source.training)

    def _candidates_view(self) -> Tensor:
        wg = to_subgroups(self.weight, self.num_subgroups)  # [G, n]
        return wg.unsqueeze(0).expand(len(self.choices), -1, -1).reshape(-1, wg.shape[1])  # [C*G, n]

    def candidate_weights(self) -> Tensor:
        """All candidates ``Q_c(W[g])`` as ``[C, G, n]`` with their graph (STE, and LSQ's step gradients),
        from one vectorized quantizer call (the reference of :class:`_MixCandidates`; the LSQ scheme's mix)."""
        q = quantize_subgroups(self._candidates_view(), self._bits_flat, self.scheme, self.step)
        return q.reshape(len(self.choices), self.num_subgroups, -1)

    def _quantized(self, c: int, wg: Tensor) -> Tensor:
        """``Q_c(wg)`` for choice index ``c`` (``[G, n]``), the same values as ``candidate_weights()[c]``."""
        g = self.num_subgroups
        return quantize_subgroups(wg, self._bits_flat[c * g:(c + 1) * g], self.scheme)

    def _constant_candidates(self) -> Tensor:
        """The candidates ``[C, G, n]`` without a graph, the prune choice a zero block (never quantized); within
        :func:`shared_candidates`, computed once per value of the weight (its storage and version counter: any
        in-place change recomputes them)."""
        key = (self.weight.data_ptr(), self.weight._version)
        if self.share_candidates and self._shared is not None and self._shared[0] == key:
            return self._shared[1]
        with torch.no_grad():
            wg = to_subgroups(self.weight.detach(), self.num_subgroups)
            pruned = [torch.zeros_like(wg)] * self._kept
            q = torch.stack(pruned + [self._quantized(c, wg) for c in range(self._kept, len(self.choices))])
        self._shared = (key, q) if self.share_candidates else None
        return q

    def probs(self) -> Tensor:
        """Choice probabilities ``p[G, C]`` under the current mode, temperature and noise.

        With ``hard`` (in training mode) the forward value is the one-hot of the sample's argmax and the
        gradient that of the soft sample (straight-through Gumbel-softmax): the weights train on the
        discrete network that was sampled, the logits still get a gradient."""
        logits = self.arch_logits
        if self.mode == "gumbel" and self.training and self.noise is not None:
            logits = logits + self.noise
        soft = torch.softmax(logits / self.tau, dim=-1)
        if not (self.hard and self.training):
            return soft
        one_hot = F.one_hot(soft.detach().argmax(-1), soft.shape[-1]).to(soft.dtype)
        return one_hot - soft.detach() + soft

    def choice_probs(self) -> Tensor:
        """The noise-free distribution ``softmax(alpha)`` the search commits with (no temperature, no noise)."""
        return torch.softmax(self.arch_logits, dim=-1)

    def mixed_weight(self) -> Tensor:
        """``W_mix[g] = sum_c p[g, c] Q_c(W[g])``, shaped like ``weight`` (fp32 even under bf16 autocast)."""
        with torch.autocast(self.weight.device.type, enabled=False):
            p = self.probs().float()
            if self.step is not None:  # LSQ: the learned steps get gradients through the candidates
                w = torch.einsum("gc,cgn->gn", p, self.candidate_weights())
            else:
                w = _MixCandidates.apply(to_subgroups(self.weight, self.num_subgroups), p,
                                         self._constant_candidates(), self._kept)
        return w.reshape(self.weight.shape)

    def argmax_bits(self) -> Tensor:
        """Bits ``[G]`` of the most probable choice per subgroup (noise-free)."""
        return self.choices[self.arch_logits.detach().argmax(-1)]

    def _search_repr(self) -> str:
        return (f"choices={self.choices.tolist()}, subgroups={self.num_subgroups}, scheme={self.scheme}, "
                f"mode={self.mode}, tau={self.tau:.3g}")


class SupernetLinear(_MixedChoices, nn.Linear):
    """``nn.Linear`` whose weight is the probability-weighted mix of its quantized candidates.

    Reuses the wrapped layer's ``weight``/``bias`` Parameters (build it with :meth:`from_linear`).
    ``arch_logits[G, C]`` may be shared with other modules (ties). ``size_table[G, C]`` holds the
    exact stored bits of each subgroup at each choice (codes + qparams, as ``model_size`` counts).

    Example:
        >>> m = SupernetLinear.from_linear(nn.Linear(8, 4), choices=(0, 2, 4), num_subgroups=2)
        >>> m(torch.randn(3, 8)).shape, tuple(m.arch_logits.shape)
        (torch.Size([3, 4]), (2, 3))
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        choices: tuple[int, ...],
        num_subgroups: int,
        scheme: str = "minmax",
        act_bits: int | None = 8,
        arch_logits: nn.Parameter | None = None,
        init_std: float = 1e-3,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        nn.Linear.__init__(self, in_features, out_features, bias, device=device, dtype=dtype)
        self._init_search(tuple(choices), num_subgroups, scheme, arch_logits, init_std)
        self.act_quant = ActQuant(act_bits).to(None if self.weight.is_meta else self.weight.device)

    @classmethod
    def from_linear(cls, linear: nn.Linear, choices: tuple[int, ...], num_subgroups: int, scheme: str = "minmax",
                    act_bits: int | None = 8, **search: Any) -> "SupernetLinear":
        """Wrap ``linear`` keeping its ``weight``/``bias`` Parameter objects (``search``: ``arch_logits``,
        ``init_std``, as the constructor takes them).

        Example:
            >>> lin = nn.Linear(8, 4)
            >>> SupernetLinear.from_linear(lin, (0, 4), 4).weight is lin.weight
            True
        """
        m = cls(linear.in_features, linear.out_features, linear.bias is not None, choices=tuple(choices),
                num_subgroups=num_subgroups, scheme=scheme, act_bits=act_bits, device="meta",
                dtype=linear.weight.dtype, **search)
        m._adopt(linear)
        return m

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(self.act_quant(x), self.mixed_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"{nn.Linear.extra_repr(self)}, {self._search_repr()}"


class SupernetEmbedding(_MixedChoices, nn.Embedding):
    """``nn.Embedding`` whose table is the probability-weighted mix of its quantized candidates, per block of
    rows (token ids) -- the word-embedding table searched like a Linear's output rows. Only the rows a batch
    looks up get gradients, so a block of tokens the data never shows keeps its initial logits unless the
    size and entropy terms move it (the search's prior decides it; ``search.prior=hawq`` weighs each block by
    its Fisher information, which is zero for tokens that never occur).

    Example:
        >>> m = SupernetEmbedding.from_embedding(nn.Embedding(12, 4), choices=(2, 4, 8), num_subgroups=3)
        >>> m(torch.tensor([[0, 11]])).shape, tuple(m.arch_logits.shape)
        (torch.Size([1, 2, 4]), (3, 3))
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None, *,
                 choices: tuple[int, ...], num_subgroups: int, scheme: str = "minmax",
                 arch_logits: nn.Parameter | None = None, init_std: float = 1e-3,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        nn.Embedding.__init__(self, num_embeddings, embedding_dim, padding_idx, device=device, dtype=dtype)
        self._init_search(tuple(choices), num_subgroups, scheme, arch_logits, init_std)

    @classmethod
    def from_embedding(cls, emb: nn.Embedding, choices: tuple[int, ...], num_subgroups: int, scheme: str = "minmax",
                       *, arch_logits: nn.Parameter | None = None, init_std: float = 1e-3) -> "SupernetEmbedding":
        """Wrap ``emb`` keeping its ``weight`` Parameter (and its padding index)."""
        if emb.max_norm is not None or emb.sparse:
            raise ValueError("a searched embedding needs max_norm=None and dense gradients")
        m = cls(emb.num_embeddings, emb.embedding_dim, emb.padding_idx, choices=tuple(choices),
                num_subgroups=num_subgroups, scheme=scheme, arch_logits=arch_logits, init_std=init_std,
                device="meta", dtype=emb.weight.dtype)
        m._adopt(emb)
        return m

    def forward(self, ids: Tensor) -> Tensor:
        return F.embedding(ids, self.mixed_weight(), self.padding_idx)

    def extra_repr(self) -> str:
        return f"{nn.Embedding.extra_repr(self)}, {self._search_repr()}"


def supernet_modules(model: nn.Module) -> dict[str, SupernetLinear | SupernetEmbedding]:
    """All searched modules (:class:`SupernetLinear`, :class:`SupernetEmbedding`) by name, in model order.

    Example:
        >>> supernet_modules(nn.Sequential(nn.Linear(2, 2)))
        {}
    """
    return {n: m for n, m in model.named_modules() if isinstance(m, _MixedChoices)}


def arch_groups(model: nn.Module) -> list[tuple[nn.Parameter, list[str]]]:
    """Each distinct logits Parameter with the names of the modules sharing it (model order).

    Example:
        >>> arch_groups(nn.Sequential(SupernetLinear.from_linear(nn.Linear(2, 2), (0, 8), 1)))[0][1]
        ['0']
    """
    groups: dict[int, tuple[nn.Parameter, list[str]]] = {}
    for name, m in supernet_modules(model).items():
        groups.setdefault(id(m.arch_logits), (m.arch_logits, []))[1].append(name)
    return list(groups.values())


def arch_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The architecture parameters (distinct logits tensors) -- for the architecture optimizer only.

    Example:
        >>> len(arch_parameters(nn.Sequential(SupernetLinear.from_linear(nn.Linear(2, 2), (0, 8), 1))))
        1
    """
    return [p for p, _ in arch_groups(model)]


def weight_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every trainable parameter that is not an architecture parameter -- for the weight optimizer.

    Example:
        >>> m = nn.Sequential(SupernetLinear.from_linear(nn.Linear(2, 2), (0, 8), 1))
        >>> len(weight_parameters(m))  # weight and bias
        2
    """
    arch = {id(p) for p in arch_parameters(model)}
    return [p for p in model.parameters() if p.requires_grad and id(p) not in arch]


def set_relaxation(model: nn.Module, mode: str | None = None, tau: float | None = None,
                   hard: bool | None = None) -> None:
    """Set the relaxation ``mode`` (:data:`MODES`), temperature ``tau`` and/or ``hard`` (straight-through
    one-hot samples in training) of every searched module; ``None`` leaves a setting as it is.

    Example:
        >>> set_relaxation(nn.Sequential(), mode="gumbel", tau=2.0, hard=True)
    """
    if mode is not None and mode not in MODES:
        raise ValueError(f"unknown relaxation mode {mode!r}; expected one of {MODES}")
    if tau is not None and not tau > 0:
        raise ValueError(f"temperature must be > 0, got {tau}")
    for m in supernet_modules(model).values():
        m.mode = mode or m.mode
        m.tau = m.tau if tau is None else float(tau)
        m.hard = m.hard if hard is None else bool(hard)


@contextmanager
def shared_candidates(model: nn.Module) -> Iterator[None]:
    """Within: every :class:`SupernetLinear` reuses its quantized candidates while its weight is unchanged.

    One search step's forward passes (architecture step, then weight step) see the same weights, so the
    candidates are computed once; an in-place change of a weight by a tensor op (the unrolled step's virtual
    weights and their restoration) bumps its version counter and recomputes them. Results are bit-identical to
    computing them at every forward pass; the shared candidates are released on exit. No optimizer step may
    run inside: fused optimizers change the weights without bumping their version counters.

    Example:
        >>> with shared_candidates(nn.Sequential()):
        ...     pass
    """
    modules = list(supernet_modules(model).values())
    for m in modules:
        m.share_candidates, m._shared = True, None
    try:
        yield
    finally:
        for m in modules:
            m.share_candidates, m._shared = False, None


@torch.no_grad()
def resample(model: nn.Module, generator: torch.Generator | None = None) -> None:
    """Draw fresh Gumbel noise, once per logits tensor, shared by all modules tied to it.

    Call once per training step, before the forward passes of that step (both the weight
    and the architecture step then see the same sample).

    Example:
        >>> resample(nn.Sequential())
    """
    for logits, names in arch_groups(model):
        # Gumbel(0, 1) = -log(Exp(1)); drawn on CPU so a seeded generator works on any device.
        e = torch.empty(logits.shape, dtype=torch.float32).exponential_(generator=generator)
        noise = (-e.clamp_min(1e-20).log()).to(device=logits.device, dtype=logits.dtype)
        for name in names:
            model.get_submodule(name).noise = noise


def build_supernet(model: nn.Module, space: SearchSpace, *, init_std: float = 1e-3, init_bias: float = 0.0) -> list[str]:
    """Turn ``model`` into a supernet in place; returns the searched module names (model order).

    Searched Linears become :class:`SupernetLinear`, searched embedding tables :class:`SupernetEmbedding`
    (tied ones share one logits Parameter); the space's other embeddings are fixed at
    ``space.embedding_bits`` with ``apply_assignment``.

    Example:
        >>> names = build_supernet(model, load_space("aqbert"))  # doctest: +SKIP
    """
    plan = space.plan(model)  # validates everything before the first change
    searched = {sm.name for sm in plan}
    if space.embedding_bits is not None:
        emb = {}
        for name in select_modules(model, space.embeddings, nn.Embedding):
            if name not in searched:
                rows, cols = model.get_submodule(name).weight.shape
                emb[name] = ModuleBits(1, (space.embedding_bits,), rows, cols, "embedding")
        apply_assignment(model, BitAssignment(modules=emb, scheme=space.scheme, act_bits=space.act_bits))
    shared: dict[str, nn.Parameter] = {}
    for sm in plan:
        old = model.get_submodule(sm.name)
        if isinstance(old, _MixedChoices):
            raise ValueError(f"{sm.name} is already searched; build_supernet runs once per model")
        logits = shared.get(sm.tie_key)
        if isinstance(old, nn.Embedding):
            new = SupernetEmbedding.from_embedding(old, sm.choices, sm.num_subgroups, space.scheme,
                                                   arch_logits=logits, init_std=init_std)
        else:
            new = SupernetLinear.from_linear(old, sm.choices, sm.num_subgroups, space.scheme, space.act_bits,
                                             arch_logits=logits, init_std=init_std)
        if logits is None and init_bias:
            with torch.no_grad():  # favour the most precise choice: start near the teacher's function
                new.arch_logits[:, -1] += init_bias
        shared.setdefault(sm.tie_key, new.arch_logits)
        parent, _, child = sm.name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, new)
    return [sm.name for sm in plan]


@torch.no_grad()
def arch_entropy(model: nn.Module) -> float:
    """Mean entropy (nats) of the noise-free choice distributions ``softmax(alpha)``, one per subgroup.

    Starts near ``log C`` and falls as the search commits; tied subgroups count once.

    Example:
        >>> m = nn.Sequential(SupernetLinear.from_linear(nn.Linear(2, 2), (0, 8), 1, init_std=0.0))
        >>> round(arch_entropy(m), 4) == round(math.log(2), 4)
        True
    """
    if not arch_parameters(model):
        raise ValueError(f"{type(model).__name__} has no searched modules; call build_supernet first")
    return arch_entropy_term(model).item()


@torch.no_grad()
def entropy_fraction(model: nn.Module) -> float:
    """:func:`arch_entropy` over its maximum (the mean of ``log C`` over the subgroups): 1 = uniform, 0 = committed.

    Example:
        >>> m = nn.Sequential(SupernetLinear.from_linear(nn.Linear(2, 2), (0, 8), 1, init_std=0.0))
        >>> entropy_fraction(m)
        1.0
    """
    params = arch_parameters(model)
    top = sum(p.shape[0] * math.log(p.shape[1]) for p in params) / sum(p.shape[0] for p in params)
    return round(arch_entropy(model) / top, 6) if top > 0 else 0.0


def arch_entropy_term(model: nn.Module) -> Tensor:
    """Mean entropy of ``softmax(alpha)`` over the subgroups, differentiable in the logits (the entropy term
    of the architecture loss: minimising it makes each subgroup commit to one choice).

    Example:
        >>> m = nn.Sequential(SupernetLinear.from_linear(nn.Linear(2, 2), (0, 8), 1))
        >>> arch_entropy_term(m).backward()
    """
    rows = [torch.distributions.Categorical(logits=p.float()).entropy() for p in arch_parameters(model)]
    return torch.cat(rows).mean()


__all__ = ["MODES", "SupernetEmbedding", "SupernetLinear", "TemperatureSchedule", "arch_entropy", "arch_entropy_term", "arch_groups",
           "arch_parameters", "entropy_fraction",
           "build_supernet", "resample", "set_relaxation", "shared_candidates", "supernet_modules",
           "weight_parameters"]
