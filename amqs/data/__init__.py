"""Data: GLUE (hub or local TSV) or your own files, search-validation split, tokenized loaders."""

from amqs.data.errors import DataError
from amqs.data.files import Columns, read_texts
from amqs.data.glue import (TASKS, TaskSpec, get_task, load_glue, load_raw, read_glue_tsv, split_search_val,
                            task_spec)
from amqs.data.loaders import make_loader, tokenize

__all__ = [
    "TASKS",
    "Columns",
    "DataError",
    "TaskSpec",
    "get_task",
    "load_glue",
    "load_raw",
    "make_loader",
    "read_glue_tsv",
    "read_texts",
    "split_search_val",
    "task_spec",
    "tokenize",
]
