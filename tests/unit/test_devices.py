"""GPU placement and CUDA failure classification, on the CPU with simulated device counts."""

from __future__ import annotations

import os
import random
from types import SimpleNamespace

import pytest
from billiard.pool import EX_RECYCLE, Pool

from orchestration.worker_cli import detect_gpus, resolve_gpus
from workers import devices
from workers.devices import gpu_for_child, is_context_broken, is_out_of_memory, parse_gpu_list


class SimulatedPool:
    """billiard's bookkeeping of live children, with its own ``_avail_index`` rule."""

    def __init__(self, processes: int) -> None:
        self._processes = processes
        self._pool: list[SimpleNamespace] = []
        self.next_pid = 100
        while len(self._pool) < processes:
            self.spawn()

    def spawn(self) -> None:
        # The real method: a replacement child gets the lowest index no live child holds.
        index = Pool._avail_index(self)
        self._pool.append(SimpleNamespace(index=index, pid=self.next_pid))
        self.next_pid += 1

    def recycle(self, victims: list[SimpleNamespace]) -> None:
        for child in victims:
            self._pool.remove(child)
        while len(self._pool) < self._processes:
            self.spawn()


@pytest.mark.parametrize("gpu_ids", [["0"], ["0", "1"], ["0", "2", "3"], [str(i) for i in range(8)]])
def test_live_children_cover_every_gpu_once_through_recycling(gpu_ids: list[str]) -> None:
    rng = random.Random(len(gpu_ids))
    pool = SimulatedPool(len(gpu_ids))
    pids_seen = {child.pid for child in pool._pool}
    for _ in range(200):
        assigned = [gpu_for_child(child.index, gpu_ids) for child in pool._pool]
        assert sorted(assigned, key=str) == sorted(gpu_ids, key=str), assigned
        # Any subset dies or is recycled at once (max-tasks-per-child, OOM kill, broken context).
        victims = rng.sample(pool._pool, rng.randint(1, len(pool._pool)))
        pool.recycle(victims)
        pids_seen |= {child.pid for child in pool._pool}
    assert len(pids_seen) > 200  # children really were replaced


@pytest.mark.parametrize("per_gpu", [2, 3, 4])
@pytest.mark.parametrize("gpu_ids", [["0"], ["0", "1"], ["1", "4", "6"]])
def test_k_children_per_gpu_stay_k_through_recycling(gpu_ids: list[str], per_gpu: int) -> None:
    """--children-per-gpu K: whatever dies and is replaced, every GPU holds exactly K live
    children (none over K, none idle while another holds more)."""
    rng = random.Random(len(gpu_ids) * 10 + per_gpu)
    pool = SimulatedPool(len(gpu_ids) * per_gpu)
    for _ in range(300):
        held = [gpu_for_child(child.index, gpu_ids) for child in pool._pool]
        assert {gpu: held.count(gpu) for gpu in gpu_ids} == dict.fromkeys(gpu_ids, per_gpu), held
        victims = rng.sample(pool._pool, rng.randint(1, len(pool._pool)))
        pool.recycle(victims)


def test_memory_fraction_setting() -> None:
    assert devices.memory_fraction(None) is None and devices.memory_fraction(" ") is None
    assert devices.memory_fraction("0.25") == 0.25 and devices.memory_fraction("1") == 1.0
    for bad in ("0", "1.5", "-0.1", "half", "nan"):
        with pytest.raises(ValueError, match=r"in \(0, 1\]"):
            devices.memory_fraction(bad)


def test_gpu_for_child_cpu_and_bad_index() -> None:
    assert gpu_for_child(0, []) is None
    assert gpu_for_child(5, []) is None
    assert gpu_for_child(1, ["4", "7"]) == "7"
    with pytest.raises(ValueError, match=">= 0"):
        gpu_for_child(-1, ["0"])


def test_parse_gpu_list() -> None:
    assert parse_gpu_list("0, 2,3") == ["0", "2", "3"]
    assert parse_gpu_list(None) == [] and parse_gpu_list("") == [] and parse_gpu_list("cpu") == []
    with pytest.raises(ValueError, match="repeat"):
        parse_gpu_list("1,1")
    with pytest.raises(ValueError, match=r"indices .* or UUIDs"):
        parse_gpu_list("0,x")
    with pytest.raises(ValueError, match="indices"):
        parse_gpu_list("-1")


def test_resolve_gpus_checks_the_ids_against_the_node() -> None:
    smi = (["0", "1", "2"], "nvidia-smi")
    assert resolve_gpus("auto", smi) == ["0", "1", "2"]
    assert resolve_gpus("2", smi) == ["0", "1"]
    assert resolve_gpus("0", smi) == []  # zero GPUs: a CPU worker
    assert resolve_gpus("2,0", smi) == ["2", "0"]
    assert resolve_gpus("auto", None) == []  # nothing detected
    assert resolve_gpus("0,5", None) == ["0", "5"]  # not checkable: taken as given
    with pytest.raises(ValueError, match="--gpus 4 asks for 4 GPUs; nvidia-smi lists 0,1,2"):
        resolve_gpus("4", smi)
    with pytest.raises(ValueError, match="GPU 7 not on this node; nvidia-smi lists 0,1,2"):
        resolve_gpus("1,7", smi)
    with pytest.raises(ValueError, match="lists none"):
        resolve_gpus("1", ([], "nvidia-smi"))


def test_a_schedulers_cuda_visible_devices_wins_over_nvidia_smi(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SLURM or a container hands this job GPUs 2 and 3 of an 8-GPU machine: auto takes those."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    detected = detect_gpus()
    assert detected == (["2", "3"], "CUDA_VISIBLE_DEVICES")
    assert resolve_gpus("auto", detected) == ["2", "3"]
    assert resolve_gpus("1", detected) == ["2"]
    with pytest.raises(ValueError, match="GPU 0 not on this node; CUDA_VISIBLE_DEVICES lists 2,3"):
        resolve_gpus("0,3", detected)
    for hidden in ("", "-1"):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
        assert detect_gpus() == ([], "CUDA_VISIBLE_DEVICES")
    mig = "MIG-4b1c2d3e-aaaa-bbbb-cccc-0123456789ab,GPU-0f0e0d0c-1111-2222-3333-444455556666"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", mig)
    assert resolve_gpus("auto", detect_gpus()) == mig.split(",")  # UUIDs pin a child too


@pytest.mark.parametrize(("configured", "index", "visible"),
                         [("4,7", 1, "7"), ("4,7", 0, "4"), ("", 0, "")])
def test_claim_gpu_pins_the_child_in_nvidia_smi_order(
    monkeypatch: pytest.MonkeyPatch, configured: str, index: int, visible: str
) -> None:
    import billiard.process

    monkeypatch.setenv(devices.GPUS_ENV, configured)
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3,4,5,6,7")
    monkeypatch.setattr(billiard.process, "current_process", lambda: SimpleNamespace(index=index))
    devices.claim_gpu()
    assert os.environ["CUDA_VISIBLE_DEVICES"] == visible  # "" hides every GPU
    # Without PCI_BUS_ID, CUDA's default (fastest first) can disagree with nvidia-smi's ids.
    assert os.environ.get("CUDA_DEVICE_ORDER") == ("PCI_BUS_ID" if visible else None)


class OutOfMemoryError(RuntimeError):
    """Same name as torch.cuda.OutOfMemoryError, which is what the check keys on."""


class AcceleratorError(RuntimeError):
    """Same name as torch.AcceleratorError."""


@pytest.mark.parametrize(
    ("exc", "oom", "broken"),
    [
        (OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True, False),
        (RuntimeError("CUDA error: out of memory"), True, False),
        (RuntimeError("CUDA error: an illegal memory access was encountered"), False, True),
        (RuntimeError("CUDA error: device-side assert triggered"), False, True),
        (AcceleratorError("unspecified launch failure"), False, True),
        (RuntimeError("CUBLAS_STATUS_EXECUTION_FAILED when calling cublasSgemm"), False, True),
        (ValueError("mlp: lr must be a number"), False, False),
        (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), False, False),
    ],
)
def test_cuda_failure_classification(exc: BaseException, oom: bool, broken: bool) -> None:
    assert is_out_of_memory(exc) is oom
    assert is_context_broken(exc) is broken


def test_after_failure_exits_only_for_a_broken_context(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "_context_broken", False)
    devices.after_failure(OutOfMemoryError("CUDA out of memory"))
    devices.after_failure(ValueError("bad params"))
    assert devices._context_broken is False
    with pytest.raises(SystemExit) as exited:
        devices.after_failure(RuntimeError("CUDA error: an illegal memory access was encountered"))
    assert exited.value.code == EX_RECYCLE  # billiard replaces the child without logging an error
    assert devices._context_broken is True
