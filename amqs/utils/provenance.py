"""What a run ran on and which rows it saw: recorded in every run's ``metrics.json``.

Machines differ between sessions (AMD EPYC or Intel Xeon, with or without VNNI/AMX, other thread
counts), and int8/bf16 speed and float summation order differ with them; the exact data slice is
identified by a hash of its rows in order.

Example::

    metrics["provenance"] = provenance("cpu", torch.get_num_threads())
    metrics["data_fingerprint"] = data_fingerprint(splits, "sst2")   # {"train": {"rows": 16000, "sha256": ...}, ...}
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping, Optional

PACKAGES = ("torch", "transformers", "onnxruntime", "optuna", "datasets")
# The CPU features that change int8 / bf16 kernels (VNNI dot products, AVX-512 bf16, AMX tiles).
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
_CPUINFO = Path("/proc/cpuinfo")


def _cpuinfo_field(name: str) -> Optional[str]:
    """The first ``name`` line of /proc/cpuinfo; None where there is no such file (macOS, Windows)."""
    try:
        for line in _CPUINFO.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == name:
                return value.strip()
    except OSError:
        pass
    return None


def cpu_name() -> str:
    """The CPU model, e.g. ``AMD EPYC 7B13`` (``platform.processor()`` outside Linux)."""
    return _cpuinfo_field("model name") or platform.processor() or "unknown CPU"


def cpu_flags() -> Optional[list[str]]:
    """Which of :data:`CPU_FLAGS` the CPU has; None when unknown (no /proc/cpuinfo)."""
    flags = _cpuinfo_field("flags")
    if flags is None:
        return None
    have = set(flags.split())
    return [f for f in CPU_FLAGS if f in have]


def _version(package: str) -> Optional[str]:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def provenance(device: str, threads: int, precision: str = "fp32") -> dict[str, Any]:
    """Package versions, CPU model and flags, threads, device and precision of this process.

    Reads package metadata and /proc/cpuinfo only (no imports of the packages): milliseconds.

    Example:
        >>> p = provenance("cpu", 1)
        >>> sorted(p)
        ['cpu', 'cpu_count', 'cpu_flags', 'device', 'packages', 'platform', 'precision', 'python', 'threads']
    """
    out: dict[str, Any] = {
        "python": platform.python_version(),
        "packages": {p: _version(p) for p in PACKAGES},
        "cpu": cpu_name(), "cpu_flags": cpu_flags(), "cpu_count": os.cpu_count(),
        "threads": threads, "device": device, "precision": precision, "platform": platform.platform(),
    }
    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            out["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return out


def data_fingerprint(splits: Mapping[str, Any], task: str) -> dict[str, Any]:
    """Per split: its row count and a short sha256 of its rows in order (text_a, text_b, label).

    Two runs with the same fingerprint saw the same rows in the same order: the same slice.

    Example:
        >>> import datasets
        >>> ds = datasets.Dataset.from_dict({"text_a": ["a", "b"], "text_b": [None, None], "label": [0, 1]})
        >>> data_fingerprint({"dev": ds}, "sst2")["dev"]
        {'rows': 2, 'sha256': '404859f59e76ece9'}
    """
    out: dict[str, Any] = {"task": task}
    for name, ds in splits.items():
        table = ds.with_format("arrow")[:]  # the rows in order, through any select/shuffle indices
        rows = list(zip(*(table.column(c).to_pylist() for c in ("text_a", "text_b", "label"))))
        digest = hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode()).hexdigest()
        out[name] = {"rows": len(ds), "sha256": digest[:16]}
    return out
