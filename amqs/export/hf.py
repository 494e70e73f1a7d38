"""``amqs-export RUN_DIR --out DIR --format hf``: the fake-quantized student as a Hugging Face folder.

The folder is what ``save_pretrained`` writes (``config.json`` with ``id2label``/``label2id``,
``model.safetensors``, the tokenizer) plus the run's ``bits.json`` and ``amqs_hf.json`` (what the folder is), so
``AutoModelForSequenceClassification.from_pretrained(DIR)`` loads it with no amqs installed.

What it holds: every quantized weight *dequantized* (each subgroup's values on its 2/4/8-bit grid, pruned rows
zero) in the model's original shapes; biases, LayerNorms, the pooler and the classifier as trained. What it
does not: the 8-bit activation quantization of the student's Linears (plain HF layers compute in float), so its
logits are the student's with activations unquantized; ``--eval`` measures how far that moves dev predictions.
It is for fine-tuning further, inspecting, or serving with HF tools; the small and fast model is the ONNX export.

Example::

    amqs-export results/runs/my-search --out exports/my-search-hf --format hf
    python -c "from transformers import AutoModelForSequenceClassification as A; A.from_pretrained('exports/my-search-hf')"
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from amqs.quant.surgery import quantized_modules

log = logging.getLogger(__name__)

HF_FACTS_FILE = "amqs_hf.json"


def dequantized_model(student: nn.Module) -> nn.Module:
    """A plain copy of ``student`` (its class, its config) whose quantized weights are the dequantized values.

    Example:
        >>> from transformers import BertConfig, BertForSequenceClassification
        >>> from amqs.quant import apply_assignment, uniform_assignment
        >>> from amqs.quant.targets import DEFAULT_LINEAR_PATTERNS
        >>> m = BertForSequenceClassification(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        ...                                              intermediate_size=32, vocab_size=50))
        >>> _ = apply_assignment(m, uniform_assignment(m, DEFAULT_LINEAR_PATTERNS, 2))
        >>> plain = dequantized_model(m)
        >>> len(plain.bert.encoder.layer[0].intermediate.dense.weight.unique()) <= 4 * 32  # 4 levels per row
        True
    """
    state = {k: v.detach().clone() for k, v in student.state_dict().items()}
    for name, module in quantized_modules(student).items():
        with torch.no_grad():
            state[f"{name}.weight"] = module.quantized_weight().detach().float().clone()
    plain = type(student)(copy.deepcopy(student.config))
    keep = plain.state_dict().keys()
    missing, unexpected = plain.load_state_dict({k: v for k, v in state.items() if k in keep}, strict=False)
    if missing:  # every parameter of the plain model must come from the student
        raise ValueError(f"the student has no values for {missing[:5]}")
    return plain.eval()


def save_hf(student: nn.Module, tokenizer: Any, out: Path, *, labels: dict[int, str],
            bits_file: Optional[Path] = None, meta: Optional[dict] = None) -> dict[str, Any]:
    """Write ``out/`` as a ``save_pretrained`` folder of :func:`dequantized_model` (safetensors); return its facts."""
    from amqs.utils.run import write_json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plain = dequantized_model(student)
    plain.config.id2label = dict(labels)
    plain.config.label2id = {n: i for i, n in labels.items()}
    plain.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    if bits_file is not None:
        (out / "bits.json").write_bytes(Path(bits_file).read_bytes())
    facts = {"format": "hf-dequantized", "weights": "dequantized (quantized values, pruned rows zero), float32",
             "activations": "float (the student's activation quantization is not part of HF layers)",
             "model_bytes": (out / "model.safetensors").stat().st_size, **(meta or {})}
    write_json(out / HF_FACTS_FILE, facts)
    log.info("wrote %s (HF save_pretrained, %d bytes of safetensors)", out, facts["model_bytes"])
    return facts
