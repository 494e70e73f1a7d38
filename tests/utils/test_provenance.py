from __future__ import annotations

import platform
from pathlib import Path

import datasets
import pytest

import amqs.utils.provenance as prov
from amqs.utils.provenance import PACKAGES, cpu_flags, cpu_name, data_fingerprint, provenance

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu sse avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
"""


def test_provenance_names_packages_cpu_threads_device_precision() -> None:
    p = provenance("cpu", 3, precision="bf16")
    assert set(PACKAGES) == set(p["packages"]) and p["packages"]["torch"] and p["python"] == platform.python_version()
    assert p["threads"] == 3 and p["device"] == "cpu" and p["precision"] == "bf16" and p["cpu"] == cpu_name()


def test_cpu_model_and_flags_from_cpuinfo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cpuinfo").write_text(CPUINFO)
    monkeypatch.setattr(prov, "_CPUINFO", tmp_path / "cpuinfo")
    assert cpu_name() == "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz"
    assert cpu_flags() == ["avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"]


def test_without_cpuinfo_it_falls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prov, "_CPUINFO", tmp_path / "absent")
    monkeypatch.setattr(platform, "processor", lambda: "arm")
    assert cpu_name() == "arm" and cpu_flags() is None
    assert provenance("cpu", 1)["cpu_flags"] is None


def _ds(rows: list[tuple]) -> datasets.Dataset:
    a, b, y = zip(*rows)
    return datasets.Dataset.from_dict({"text_a": list(a), "text_b": list(b), "label": list(y)})


def test_data_fingerprint_identifies_the_rows_in_order() -> None:
    rows = [("good", None, 1), ("bad", None, 0), ("fine", None, 1)]
    fp = data_fingerprint({"train": _ds(rows), "dev": _ds(rows[:2])}, "sst2")
    assert fp["task"] == "sst2" and fp["train"]["rows"] == 3 and fp["dev"]["rows"] == 2
    assert data_fingerprint({"train": _ds(rows)}, "sst2")["train"] == fp["train"]  # stable
    assert data_fingerprint({"train": _ds(rows[::-1])}, "sst2")["train"]["sha256"] != fp["train"]["sha256"]  # order
    relabelled = [("good", None, 0), *rows[1:]]
    assert data_fingerprint({"train": _ds(relabelled)}, "sst2")["train"]["sha256"] != fp["train"]["sha256"]
    # a selected slice is hashed as the rows it holds, not as the table under it
    assert data_fingerprint({"dev": _ds(rows).select([0, 1])}, "sst2")["dev"] == fp["dev"]
    pairs = _ds([("a", "b", 1), ("c", "d", 0)])
    assert data_fingerprint({"dev": pairs}, "mrpc")["dev"]["sha256"] != data_fingerprint(
        {"dev": _ds([("a", "d", 1), ("c", "b", 0)])}, "mrpc")["dev"]["sha256"]
