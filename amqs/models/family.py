"""The BERT family: the HF model types amqs supports, and how each spells BERT's modules.

amqs names modules in **BERT's spelling** wherever a name is written down by hand: the default quantization
patterns (:mod:`amqs.quant.targets`), the search spaces (``search_spaces/*.yaml``), the encoder prefix of the
size accounting (``bert.encoder.``). A :class:`Family` maps its own module names to that spelling
(:meth:`Family.canonical`) and back (:meth:`Family.own`); a pattern or prefix is tested against a module's own
name *and* its BERT spelling (:func:`name_matches`, :func:`under_prefix`), so one search space selects the same
six Linears of every layer in each family, and a pattern written in a family's own names works as well.
Assignments (``bits.json``), checkpoints and exports keep the model's own names.

::

    BERT spelling (per layer: bert.encoder.layer.i.)   RoBERTa              DistilBERT (distilbert.transformer.layer.i.)
    bert.embeddings.word/position/token_type_embeddings roberta.embeddings.  distilbert.embeddings. (no token types)
    attention.self.query / key / value                  (same)               attention.q_lin / k_lin / v_lin
    attention.output.dense / LayerNorm                  (same)               attention.out_lin / sa_layer_norm
    intermediate.dense                                  (same)               ffn.lin1
    output.dense / LayerNorm                            (same)               ffn.lin2 / output_layer_norm
    head: bert.pooler.dense, tanh, classifier           classifier.dense,    pre_classifier, ReLU, classifier
                                                        tanh, .out_proj

Example:
    >>> canonical_name("distilbert.transformer.layer.3.ffn.lin1")
    'bert.encoder.layer.3.intermediate.dense'
    >>> family_named("distilbert").own("bert.encoder.layer.3.attention.self.value")
    'distilbert.transformer.layer.3.attention.v_lin'
    >>> name_matches(r"bert\\.encoder\\..*", "roberta.encoder.layer.0.output.dense")
    True
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Any

BERT_ENCODER = "bert.encoder"
_BERT_NAMES = (BERT_ENCODER + ".layer", BERT_ENCODER, "bert")  # BERT's layers, encoder and base model


class UnsupportedModelError(ValueError):
    """A checkpoint (or ``model.model_type``) of a model type amqs does not support."""


@dataclass(frozen=True)
class Family:
    """One supported ``model_type``: its classes, its module names and the parts of its computation that differ."""

    model_type: str
    classifier_class: str  # the transformers sequence-classification class
    config_class: str
    base: str  # the base model's attribute (HF's base_model_prefix)
    encoder: str  # its own name of BERT's ``bert.encoder``
    # (BERT spelling, own spelling) of the modules inside a layer whose names differ
    renames: tuple[tuple[str, str], ...] = ()
    # own names of the head's two Linears: the dense layer on the first token, then the output projection
    head: tuple[str, str] = ("bert.pooler.dense", "classifier")
    head_act: str = "tanh"  # tanh | relu, between the two
    act_key: str = "hidden_act"  # config key of the FFN activation
    ffn_key: str = "intermediate_size"  # config key of the FFN width
    # config keys of the sizes model.source=random sets (ModelConfig's names -> the family's own)
    size_keys: tuple[tuple[str, str], ...] = ()
    positions_from_padding: bool = False  # RoBERTa: position ids count non-pad tokens from pad_token_id + 1

    @property
    def layers(self) -> str:
        return self.encoder + ".layer"

    def canonical(self, name: str) -> str:
        """``name`` (a module, or a tensor under one) in BERT's spelling; names outside the base model unchanged."""
        return _translate(name, (self.layers, self.encoder, self.base), _BERT_NAMES,
                          {own: bert for bert, own in self.renames})

    def own(self, canonical: str) -> str:
        """The family's own name of a BERT-spelled name (the inverse of :meth:`canonical`)."""
        return _translate(canonical, _BERT_NAMES, (self.layers, self.encoder, self.base), dict(self.renames))

    def layer_module(self, layer: int, role: str) -> str:
        """Own name of a module of ``layer`` given by its BERT-relative name (``"attention.self.value"``)."""
        return self.own(f"{BERT_ENCODER}.layer.{layer}.{role}")

    def classifier(self) -> type:
        """The transformers sequence-classification class (imported on first use)."""
        return getattr(importlib.import_module("transformers"), self.classifier_class)

    def config(self, **sizes: Any) -> Any:
        """A transformers config of this family; ModelConfig's size names are mapped to the family's own."""
        keys = dict(self.size_keys)
        cls = getattr(importlib.import_module("transformers"), self.config_class)
        return cls(**{keys.get(k, k): v for k, v in sizes.items()})

    def hidden_act(self, config: Any) -> str:
        return str(getattr(config, self.act_key))

    def ffn_size(self, config: Any) -> int:
        return int(getattr(config, self.ffn_key))


def _translate(name: str, src: tuple[str, str, str], dst: tuple[str, str, str], renames: dict[str, str]) -> str:
    """Swap the longest matching prefix of ``src`` (layers, encoder, base) for ``dst``'s; inside a layer, rename
    the first module of ``renames`` that ``name`` is (or lies under)."""
    layers = src[0] + "."
    if name.startswith(layers):
        index, _, rest = name[len(layers):].partition(".")
        for a, b in renames.items():
            if rest == a or rest.startswith(a + "."):
                rest = b + rest[len(a):]
                break
        return f"{dst[0]}.{index}" + (f".{rest}" if rest else "")
    for s, d in zip(src[1:], dst[1:]):
        if name == s or name.startswith(s + "."):
            return d + name[len(s):]
    return name


_DISTILBERT_RENAMES = (
    ("attention.self.query", "attention.q_lin"), ("attention.self.key", "attention.k_lin"),
    ("attention.self.value", "attention.v_lin"), ("attention.output.dense", "attention.out_lin"),
    ("attention.output.LayerNorm", "sa_layer_norm"), ("intermediate.dense", "ffn.lin1"),
    ("output.dense", "ffn.lin2"), ("output.LayerNorm", "output_layer_norm"),
)

FAMILIES: dict[str, Family] = {
    f.model_type: f
    for f in (
        Family("bert", "BertForSequenceClassification", "BertConfig", "bert", BERT_ENCODER),
        Family("roberta", "RobertaForSequenceClassification", "RobertaConfig", "roberta", "roberta.encoder",
               head=("classifier.dense", "classifier.out_proj"), positions_from_padding=True),
        Family("distilbert", "DistilBertForSequenceClassification", "DistilBertConfig", "distilbert",
               "distilbert.transformer", renames=_DISTILBERT_RENAMES, head=("pre_classifier", "classifier"),
               head_act="relu", act_key="activation", ffn_key="hidden_dim",
               size_keys=(("hidden_size", "dim"), ("num_hidden_layers", "n_layers"),
                          ("num_attention_heads", "n_heads"), ("intermediate_size", "hidden_dim"))),
    )
}
SUPPORTED = tuple(FAMILIES)
_BY_BASE = {f.base: f for f in FAMILIES.values()}


def family_named(model_type: str | None, where: str = "model") -> Family:
    """The :class:`Family` of a ``model_type``; any other type fails with one line listing the supported ones.

    Example:
        >>> family_named("roberta").encoder
        'roberta.encoder'
    """
    if model_type not in FAMILIES:
        raise UnsupportedModelError(f"{where}: model_type {model_type!r} is not supported; amqs supports "
                                    f"{', '.join(SUPPORTED)} (BERT of any size, RoBERTa, DistilBERT)")
    return FAMILIES[model_type]


def family_of(model: Any) -> Family:
    """The family of an HF model (or config), from its ``config.model_type``.

    Example:
        >>> from transformers import DistilBertConfig
        >>> family_of(DistilBertConfig()).head
        ('pre_classifier', 'classifier')
    """
    config = getattr(model, "config", model)
    return family_named(getattr(config, "model_type", None), type(model).__name__)


def canonical_name(name: str) -> str:
    """``name`` in BERT's spelling, the family read from its first component (``roberta.``, ``distilbert.``).

    Example:
        >>> canonical_name("roberta.encoder.layer.0.attention.self.query")
        'bert.encoder.layer.0.attention.self.query'
        >>> canonical_name("classifier")
        'classifier'
    """
    family = _BY_BASE.get(name.partition(".")[0])
    return family.canonical(name) if family else name


def name_matches(pattern: str | re.Pattern, name: str) -> bool:
    """Whether ``pattern`` fullmatches ``name`` or its BERT spelling (:func:`canonical_name`)."""
    p = re.compile(pattern) if isinstance(pattern, str) else pattern
    return p.fullmatch(name) is not None or p.fullmatch(canonical_name(name)) is not None


def under_prefix(name: str, prefix: str) -> bool:
    """Whether ``name`` (or its BERT spelling) starts with ``prefix`` or is the module ``prefix`` names.

    Example:
        >>> under_prefix("distilbert.transformer.layer.1.ffn.lin2", "bert.encoder.")
        True
    """
    return any(n.startswith(prefix) or n == prefix.rstrip(".") for n in (name, canonical_name(name)))


def uses_token_types(config: Any) -> bool:
    """Whether the model reads ``token_type_ids`` (a token-type table of more than one row: BERT's; RoBERTa's single
    row and DistilBERT's absent table take none, so the tokenizer must not produce them)."""
    return int(getattr(config, "type_vocab_size", 0) or 0) > 1


__all__ = ["FAMILIES", "SUPPORTED", "Family", "UnsupportedModelError", "canonical_name", "family_named",
           "family_of", "name_matches", "under_prefix", "uses_token_types"]
