"""Model loading: HF ids, local folders, the embedded MiniLM, random tiny BERTs."""

from amqs.models.loading import load_classifier, load_tokenizer, resolve_source

__all__ = ["load_classifier", "load_tokenizer", "resolve_source"]
