"""Devices and collectives (amqs.utils.dist): refusals, device choice, tensors on the group's device, weighting."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import amqs.utils.dist as d


class _Stop(Exception):
    pass


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> list[torch.device]:
    """Four visible CUDA devices (none is touched); returns the devices passed to set_device."""
    chosen: list[torch.device] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    return chosen


def test_cpu_is_always_there() -> None:
    assert d.resolve_device("cpu") == torch.device("cpu")
    assert d.init_distributed("cpu") == (0, 1)


def test_cuda_without_cuda_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    msg = "device=cuda: no CUDA device is visible here (torch.cuda.is_available() is False); use device=cpu"
    with pytest.raises(ValueError) as e:
        d.resolve_device("cuda")
    assert str(e.value) == msg
    with pytest.raises(ValueError, match="no CUDA device"):
        d.init_distributed("cuda")  # before any process group
    with pytest.raises(ValueError, match="not a torch device name"):
        d.resolve_device("gpu")


def test_cuda_takes_the_local_rank_under_torchrun(monkeypatch: pytest.MonkeyPatch, fake_cuda: list) -> None:
    assert d.resolve_device("cuda") == torch.device("cuda", 0) and d.resolve_device("cuda:2") == torch.device("cuda", 2)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert d.resolve_device("cuda") == torch.device("cuda", 1)
    assert fake_cuda == [torch.device("cuda", i) for i in (0, 2, 1)]
    with pytest.raises(ValueError, match="under torchrun: use device=cuda"):
        d.resolve_device("cuda:0")
    monkeypatch.setenv("LOCAL_RANK", "4")
    with pytest.raises(ValueError, match="cuda:4 is not visible here"):
        d.resolve_device("cuda")


@pytest.mark.parametrize("device,backend", [("cuda", "nccl"), ("cpu", "gloo")])
def test_the_group_uses_nccl_on_cuda_after_setting_the_device(monkeypatch: pytest.MonkeyPatch, fake_cuda: list,
                                                              device: str, backend: str) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    calls: list = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda dev: calls.append(("set_device", dev)))
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend: calls.append(("init", backend)))
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    assert d.init_distributed(device) == (1, 2)
    expected = [("set_device", torch.device("cuda", 1))] if device == "cuda" else []
    assert calls == [*expected, ("init", backend)]


def _recording(monkeypatch: pytest.MonkeyPatch, backend: str = "gloo") -> list[torch.device]:
    """A 2-rank world whose collectives record their tensors' device, then stop."""
    seen: list[torch.device] = []

    def collective(*args, **kwargs):
        seen.append(args[-1].device if isinstance(args[-1], torch.Tensor) else args[0].device)
        raise _Stop

    monkeypatch.setattr(d, "world_size", lambda: 2)
    monkeypatch.setattr(dist, "get_backend", lambda: backend)
    monkeypatch.setattr(dist, "all_gather", collective)
    monkeypatch.setattr(dist, "all_reduce", collective)
    return seen


def test_collectives_put_their_tensors_on_the_given_device(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _recording(monkeypatch)
    for call in (lambda: d.same_on_all_ranks(3, device="meta"),
                 lambda: d.all_reduce_weighted([torch.ones(2, device="meta")], count=3, device="meta")):
        with pytest.raises(_Stop):
            call()
    assert seen == [torch.device("meta")] * 2


def test_collectives_default_to_the_current_cuda_device_under_nccl(monkeypatch: pytest.MonkeyPatch) -> None:
    _recording(monkeypatch, backend="nccl")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert d.collective_device() == torch.device("cuda", 1)
    monkeypatch.setattr(dist, "get_backend", lambda: "gloo")
    assert d.collective_device() == torch.device("cpu")


def test_single_process_collectives_change_nothing() -> None:
    g = torch.randn(5)
    before = g.clone()
    d.all_reduce_weighted([g, None], count=7)
    d.all_reduce_mean([g])
    assert torch.equal(g, before) and d.same_on_all_ranks(5) and d.all_gather_objects({"a": 1}) == [{"a": 1}]


GRADS = (torch.tensor([1.0, -2.0, 4.0]), torch.tensor([3.0, 6.0, 0.5]))
COUNTS = (32, 1)  # a full batch and a short last one


def _rank(rank: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        g = GRADS[rank].clone()
        d.all_reduce_weighted([g, None], count=COUNTS[rank])
        torch.save({"grad": g, "same": d.same_on_all_ranks(7), "differ": d.same_on_all_ranks(rank),
                    "objects": d.all_gather_objects(rank * 10)}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_average_by_example_count(tmp_path: Path) -> None:
    mp.spawn(_rank, args=(str(tmp_path / "store"), str(tmp_path / "out")), nprocs=2)
    expected = (COUNTS[0] * GRADS[0] + COUNTS[1] * GRADS[1]) / sum(COUNTS)
    for rank in (0, 1):
        got = torch.load(tmp_path / f"out.{rank}")
        torch.testing.assert_close(got["grad"], expected, rtol=1e-6, atol=0)
        assert got["same"] and not got["differ"] and got["objects"] == [0, 10]
