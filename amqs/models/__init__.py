"""Model loading (HF ids, local folders, the embedded MiniLM, random tiny models) and the supported families.

:mod:`~amqs.models.family` is imported by the quantization layer (module names in BERT's spelling), so this
package loads :mod:`~amqs.models.loading` (transformers, the configs) only when one of its names is used.
"""

from typing import Any

__all__ = ["load_classifier", "load_tokenizer", "resolve_source"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from amqs.models import loading

        return getattr(loading, name)
    raise AttributeError(f"module 'amqs.models' has no attribute {name!r}")
