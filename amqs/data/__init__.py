"""GLUE data: loading (hub or local TSV), search-validation split, tokenized loaders."""

from amqs.data.glue import TASKS, DataError, TaskSpec, get_task, load_glue, load_raw, read_glue_tsv, split_search_val
from amqs.data.loaders import make_loader, tokenize

__all__ = [
    "TASKS",
    "DataError",
    "TaskSpec",
    "get_task",
    "load_glue",
    "load_raw",
    "make_loader",
    "read_glue_tsv",
    "split_search_val",
    "tokenize",
]
