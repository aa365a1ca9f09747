"""On a CUDA machine: real pinning of pool children to GPUs, the ``mlp`` evaluator on a GPU, and
CUDA errors (out of memory, a broken context) inside real workers. Skipped without CUDA."""

from __future__ import annotations

import os
import shutil
import string
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import torch

from orchestration.local_cluster import LocalRedis
from tests.conftest import make_spec, run_spec
from tests.integration.test_worker_cli import evofleet_worker
from workers.contract import Candidate, Status
from workers.devices import GPUS_ENV
from workers.evaluators import EvaluationContext, Scores
from workers.ledger import Ledger

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
GPU_COUNT = torch.cuda.device_count() if torch.cuda.is_available() else 0
PROBE = "tests.gpu.test_gpu_workers:gpu_probe"
GpuWorker = tuple[str, "subprocess.Popen[bytes]", Path]  # broker URL, worker process, its log


def gpu_probe(candidate: Candidate, context: EvaluationContext) -> Scores:
    """Does a little work on the context's device; reports which physical GPU that was."""
    mode = candidate.params.get("mode", "ok")
    if mode == "oom":
        torch.empty(1 << 44, dtype=torch.uint8, device=context.device)  # 16 TiB
    if mode == "half":  # over a 0.25 memory cap, far below the card's memory
        total = torch.cuda.get_device_properties(context.device).total_memory
        torch.empty(total // 2, dtype=torch.uint8, device=context.device)
    if mode == "assert":  # an out-of-bounds index: device-side assert, the context is broken
        values = torch.zeros(4, device=context.device)
        values[torch.tensor([10], device=context.device)] += 1
        torch.cuda.synchronize()
    x = torch.randn(512, 512, device=context.device)
    (x @ x).sum().item()
    time.sleep(float(candidate.params.get("seconds", 0.0)))
    return {
        "pid": float(os.getpid()),
        # Which of the worker's GPUs (EVOFLEET_GPUS, ids or UUIDs) this child claimed.
        "slot": float(os.environ[GPUS_ENV].split(",").index(os.environ["CUDA_VISIBLE_DEVICES"])),
        "devices_seen": float(torch.cuda.device_count()),
        "bus": physical_gpu(context.device),
    }


def physical_gpu(device: torch.device) -> float:
    """The physical GPU behind ``device`` as a number: its PCI address, else its UUID."""
    props = torch.cuda.get_device_properties(device)
    if getattr(props, "pci_bus_id", None) is not None:
        return float(props.pci_domain_id * 10**6 + props.pci_bus_id * 100 + props.pci_device_id)
    digits = "".join(c for c in str(props.uuid) if c in string.hexdigits)
    return float(int(digits[-12:], 16))


OBJECTIVES = {"pid": "min", "slot": "min", "devices_seen": "min", "bus": "min"}


def compute_app_pids() -> set[int]:
    out = subprocess.run(
        ["nvidia-smi", "--query-compute-apps=pid", "--format=csv,noheader"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout
    return {int(line) for line in out.split() if line.strip().isdigit()}


@pytest.fixture
def gpu_worker(tmp_path: Path) -> Iterator[GpuWorker]:
    server = LocalRedis().start()
    with evofleet_worker(server.url, "gpu@127.0.0.1", "--gpus", "auto",
                         log=tmp_path / "worker.log") as process:
        yield server.url, process, tmp_path / "worker.log"
    server.stop()


def test_each_child_owns_one_gpu_and_the_parent_never_touches_cuda(gpu_worker: GpuWorker) -> None:
    url, process, _ = gpu_worker
    spec = make_spec([{"id": f"c{i}", "params": {"seconds": 0.5}} for i in range(4 * GPU_COUNT)],
                     evaluator=PROBE, objectives=OBJECTIVES)
    assert run_spec(spec, url, timeout_s=120).wait(0) == "complete"
    results = list(Ledger(redis.Redis.from_url(url), spec.id).iter_results())
    assert {r.status for r in results} == {Status.ok}
    assert {r.device for r in results} == {"cuda:0"}  # each child sees only its own GPU
    assert {r.scores["devices_seen"] for r in results} == {1.0}
    assert {r.scores["slot"] for r in results} == {float(i) for i in range(GPU_COUNT)}
    bus_of_pid: dict[float, set[float]] = {}
    for r in results:
        bus_of_pid.setdefault(r.scores["pid"], set()).add(r.scores["bus"])
    assert all(len(b) == 1 for b in bus_of_pid.values())
    assert len({r.scores["bus"] for r in results}) == GPU_COUNT  # no GPU idle, none shared
    if shutil.which("nvidia-smi"):
        assert process.pid not in compute_app_pids()  # the worker's main process has no context
    print(f"{GPU_COUNT} GPU(s); pid -> PCI bus: {bus_of_pid}")


def test_mlp_on_the_gpu(gpu_worker: GpuWorker) -> None:
    url, _, _ = gpu_worker
    params = {"hidden": [128, 64], "lr": 0.003, "epochs": 20, "dropout": 0.1, "batch_size": 32,
              "seed": 3}
    spec = make_spec([{"id": "a", "params": params}, {"id": "b", "params": params}],
                     evaluator="mlp",
                     objectives={"accuracy": "max", "params": "min", "train_seconds": "min"})
    assert run_spec(spec, url, timeout_s=120).wait(0) == "complete"
    results = {r.candidate_id: r for r in Ledger(redis.Redis.from_url(url), spec.id).iter_results()}
    assert {r.status for r in results.values()} == {Status.ok}
    assert {r.device for r in results.values()} == {"cuda:0"}
    assert results["a"].scores["accuracy"] > 0.9
    print("mlp on GPU:", {k: r.scores for k, r in results.items()})


def test_out_of_memory_is_an_error_and_a_broken_context_replaces_the_child(gpu_worker: GpuWorker) -> None:
    url, _, log = gpu_worker
    candidates = [{"id": "oom", "priority": "critical", "params": {"mode": "oom"}},
                  {"id": "after-oom", "priority": "high", "params": {}},
                  {"id": "assert", "priority": "normal", "params": {"mode": "assert"}},
                  {"id": "after-assert", "priority": "low", "params": {}}]
    spec = make_spec(candidates, evaluator=PROBE, objectives=OBJECTIVES)
    assert run_spec(spec, url, timeout_s=120).wait(0) == "complete"
    results = {r.candidate_id: r for r in Ledger(redis.Redis.from_url(url), spec.id).iter_results()}
    assert results["oom"].status == Status.error and results["oom"].error is not None
    assert "out of memory" in results["oom"].error.message.lower()
    assert results["assert"].status == Status.error
    assert results["after-oom"].status == results["after-assert"].status == Status.ok
    assert "CUDA context broken" in log.read_text()
    print("CUDA errors:", {k: (r.status.value, r.error and r.error.message[:80])
                           for k, r in results.items()})


def test_two_children_share_each_gpu_and_a_memory_cap_keeps_an_oom_their_own(tmp_path: Path) -> None:
    """``--children-per-gpu 2 --gpu-memory-fraction 0.25``: two children per GPU, each seeing
    one device; a candidate asking for half the card fails alone, the others run."""
    server = LocalRedis().start()
    try:
        with evofleet_worker(server.url, "gpu2@127.0.0.1", "--gpus", "auto",
                             "--children-per-gpu", "2", "--gpu-memory-fraction", "0.25",
                             log=tmp_path / "worker.log"):
            rows = [{"id": f"c{i}", "params": {"seconds": 0.5}} for i in range(8 * GPU_COUNT)]
            rows.append({"id": "half", "params": {"mode": "half"}})
            spec = make_spec(rows, evaluator=PROBE, objectives=OBJECTIVES)
            assert run_spec(spec, server.url, timeout_s=180).wait(0) == "complete"
            results = {r.candidate_id: r
                       for r in Ledger(redis.Redis.from_url(server.url), spec.id).iter_results()}
    finally:
        server.stop()
    assert results["half"].status == Status.error
    assert "out of memory" in results["half"].error.message.lower()  # type: ignore[union-attr]
    ok = [r for r in results.values() if r.candidate_id != "half"]
    assert {r.status for r in ok} == {Status.ok}
    assert {r.scores["devices_seen"] for r in ok} == {1.0}
    pids_of_bus: dict[float, set[float]] = {}
    for r in ok:
        pids_of_bus.setdefault(r.scores["bus"], set()).add(r.scores["pid"])
    assert len(pids_of_bus) == GPU_COUNT
    assert all(len(pids) == 2 for pids in pids_of_bus.values())  # two children on each GPU
    print(f"children per GPU (pids by PCI bus): {pids_of_bus}")
