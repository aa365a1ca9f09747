"""``evofleet worker`` / ``evofleet workers`` on real workers: command line, CPU fallback,
GPU pinning with a simulated GPU list, children recycled, a broken CUDA context replaced."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
import torch
from typer.testing import CliRunner

from orchestration.api import launch
from orchestration.cli import app
from orchestration.local_cluster import LocalRedis, stop_process_group
from orchestration.worker_cli import list_workers
from tests.conftest import make_spec, run_spec
from workers.contract import Candidate, Status
from workers.evaluators import EvaluationContext, Scores
from workers.keys import WORKER_SLOTS
from workers.ledger import Ledger

ROOT = Path(__file__).resolve().parents[2]
EVOFLEET = str(Path(sys.executable).with_name("evofleet"))
PROBE = "tests.integration.test_worker_cli:probe"
BROKEN_CUDA = "CUDA error: an illegal memory access was encountered"


_HELD: list[bytes] = []


def probe(candidate: Candidate, context: EvaluationContext) -> Scores:
    """Sleeps ``params.seconds``; scores this child's pid and the GPU it claimed (-1: none).

    ``params.hold_mb`` leaks that much resident memory, kept until the child exits."""
    time.sleep(float(candidate.params.get("seconds", 0.0)))
    _HELD.append(b"\1" * (int(candidate.params.get("hold_mb", 0)) << 20))
    if candidate.params.get("broken"):
        raise RuntimeError(BROKEN_CUDA)
    gpu = os.environ.get("CUDA_VISIBLE_DEVICES") or "-1"
    return {"pid": float(os.getpid()), "gpu": float(gpu)}


def probe_spec(candidates: list[dict[str, object]], **fields: object) -> object:
    return make_spec(candidates, evaluator=PROBE, objectives={"pid": "min", "gpu": "min"},
                     **fields)


@contextmanager
def evofleet_worker(
    url: str, hostname: str, *args: str, log: Path, visible: str | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """``evofleet worker ... --broker URL`` as a subprocess, ready to consume; stopped after.

    ``visible``: the worker's CUDA_VISIBLE_DEVICES ("" hides a real GPU from a CPU test)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVOFLEET_")}
    if visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible
    with log.open("ab") as out:
        process = subprocess.Popen(
            [EVOFLEET, "worker", "--broker", url, "--hostname", hostname, *args],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    client = redis.Redis.from_url(url)
    try:
        deadline = time.monotonic() + 60
        while not client.exists(WORKER_SLOTS.format(hostname=hostname)):
            assert process.poll() is None, f"worker exited: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "worker not ready within 60 s"
            time.sleep(0.1)
        yield process
    finally:
        client.close()
        stop_process_group(process)


def test_dry_run_builds_the_celery_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")  # a node with four GPUs
    runner = CliRunner()
    result = runner.invoke(app, [
        "worker", "--gpus", "0,2", "--queues", "low,critical", "--max-tasks-per-child", "5",
        "--max-memory-per-child", "500", "--hostname", "gpu1@node", "--dry-run",
    ])
    assert result.exit_code == 0, result.output
    line = result.output.strip()
    assert line.startswith("EVOFLEET_GPUS=0,2 ")
    command = line.split()[1:]
    assert command[1:6] == ["-m", "celery", "-A", "workers", "worker"]
    flags = dict(zip(command[6::2], command[7::2], strict=False))
    assert flags["--pool"] == "prefork"
    assert flags["--concurrency"] == "2"  # one pool child per GPU
    assert flags["-Q"] == "critical,low"  # always highest priority first
    assert flags["--max-tasks-per-child"] == "5"
    assert flags["--max-memory-per-child"] == str(500 * 1024)  # celery takes KiB
    assert flags["--hostname"] == "gpu1@node"
    assert {"--without-mingle", "--without-gossip"} <= set(command)  # see worker_command

    first_two = runner.invoke(app, ["worker", "--gpus", "2", "--concurrency", "7", "--dry-run"])
    assert first_two.output.startswith("EVOFLEET_GPUS=0,1 ")
    assert "--concurrency 2 " in first_two.output  # GPUs win over --concurrency

    bad = runner.invoke(app, ["worker", "--gpus", "0,0", "--dry-run"])
    assert bad.exit_code == 2 and "repeat" in bad.output


def test_children_per_gpu_and_memory_fraction_on_the_command_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    runner = CliRunner()
    shared = runner.invoke(app, ["worker", "--gpus", "0,2", "--children-per-gpu", "3",
                                 "--gpu-memory-fraction", "0.3", "--dry-run"])
    assert shared.exit_code == 0, shared.output
    assert shared.output.startswith("EVOFLEET_GPUS=0,2 EVOFLEET_GPU_MEMORY_FRACTION=0.3 ")
    assert "--concurrency 6 " in shared.output  # 2 GPUs x 3 children
    for args, hint in ((["--children-per-gpu", "0"], "--children-per-gpu"),
                       (["--gpu-memory-fraction", "1.5"], "--gpu-memory-fraction")):
        bad = runner.invoke(app, ["worker", "--gpus", "0", *args, "--dry-run"])
        assert bad.exit_code == 2 and hint in bad.output, bad.output


def test_gpus_asked_for_when_none_is_detected_are_warned_about(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    if shutil.which("nvidia-smi"):
        pytest.skip("a GPU node: GPUs are detected here")
    result = CliRunner().invoke(app, ["worker", "--gpus", "3", "--dry-run"])
    assert result.exit_code == 0
    assert "warning: no GPU detected" in result.output and "--gpus 3 as 3 GPU(s)" in result.output


def test_gpus_auto_falls_back_to_cpu_concurrency(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    runner = CliRunner()
    with_flag = runner.invoke(app, ["worker", "--gpus", "auto", "--concurrency", "3", "--dry-run"])
    default = runner.invoke(app, ["worker", "--dry-run"])
    assert with_flag.exit_code == 0 and default.exit_code == 0
    if shutil.which("nvidia-smi"):
        pytest.skip("a GPU node: auto finds GPUs (tests/gpu covers it)")
    assert with_flag.output.startswith("EVOFLEET_GPUS= ")
    assert "--concurrency 3 " in with_flag.output
    assert f"--concurrency {os.cpu_count()} " in default.output


def test_gpus_are_read_from_nvidia_smi_and_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node whose ``nvidia-smi`` lists GPUs 0 and 1 (a stand-in script: no GPU here)."""
    fake = tmp_path / "nvidia-smi"
    fake.write_text('#!/bin/sh\n[ "$1" = "--query-gpu=index" ] && printf "0\\n1\\n"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    runner = CliRunner()
    auto = runner.invoke(app, ["worker", "--gpus", "auto", "--concurrency", "7", "--dry-run"])
    assert auto.exit_code == 0 and auto.output.startswith("EVOFLEET_GPUS=0,1 ")
    assert "--concurrency 2 " in auto.output
    too_many = runner.invoke(app, ["worker", "--gpus", "0,3", "--dry-run"])
    assert too_many.exit_code == 2
    assert "GPU 3 not on this node; nvidia-smi lists 0,1" in " ".join(too_many.output.split())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # a scheduler gave this job GPU 1 only
    allotted = runner.invoke(app, ["worker", "--dry-run"])
    assert allotted.exit_code == 0 and allotted.output.startswith("EVOFLEET_GPUS=1 ")


@pytest.mark.slow
def test_auto_worker_on_cpu_serves_a_generation_and_workers_lists_it(
    private_redis: LocalRedis, tmp_path: Path
) -> None:
    url = private_redis.url
    hostname = "cpu-node@127.0.0.1"
    candidates = [{"id": f"c{i}", "params": {"seconds": 1.0}} for i in range(6)]
    with evofleet_worker(url, hostname, "--gpus", "auto", "--concurrency", "2",
                         log=tmp_path / "worker.log", visible=""):
        spec = probe_spec(candidates)
        generation = launch(spec, broker_url=url)  # type: ignore[arg-type]
        running: list[str] = []
        deadline = time.monotonic() + 20
        while len(running) < 2 and time.monotonic() < deadline:
            rows = list_workers(url, timeout_s=1.0)
            running = rows[0]["running"] if rows else []
        assert [row["hostname"] for row in rows] == [hostname]
        assert rows[0]["gpus"] == [] and rows[0]["children"] == 2
        assert len(running) == 2
        for line in running:  # "pid 123: <generation> c3"
            assert line.startswith("pid ") and spec.id in line  # type: ignore[attr-defined]
            assert line.split()[-1] in {c["id"] for c in candidates}
        assert generation.wait(60) == "complete"

        rows = list_workers(url, timeout_s=1.0)
        # The chord body may still be on its way: the launcher completes a generation itself.
        assert rows[0]["tasks_done"] >= len(candidates)
        assert rows[0]["running"] == []
        table = CliRunner().invoke(app, ["workers", "--broker", url, "--timeout", "1"],
                                   env={"COLUMNS": "200"})
        assert table.exit_code == 0 and hostname in table.output and "cpu" in table.output

    results = list(Ledger(redis.Redis.from_url(url), spec.id).iter_results())  # type: ignore[attr-defined]
    assert {r.status for r in results} == {Status.ok} and len(results) == 6
    assert {r.worker for r in results} == {hostname}  # each result names its worker and device
    assert {r.device for r in results} == {"cpu"}
    assert {r.scores["gpu"] for r in results} == {-1.0}
    assert len({r.scores["pid"] for r in results}) == 2


@pytest.mark.slow
def test_children_pinned_to_distinct_gpus_through_recycling(
    private_redis: LocalRedis, tmp_path: Path
) -> None:
    """``--gpus 0,1`` on the CPU: each child sets CUDA_VISIBLE_DEVICES to its own id, and
    children replaced after 2 tasks take over the freed id; overlapping runs never share one."""
    url = private_redis.url
    with evofleet_worker(url, "pin@127.0.0.1", "--gpus", "0,1", "--max-tasks-per-child", "2",
                         log=tmp_path / "worker.log", visible="0,1"):
        spec = probe_spec([{"id": f"c{i}", "params": {"seconds": 0.3}} for i in range(10)])
        generation = run_spec(spec, url, timeout_s=90)
        assert generation.wait(0) == "complete"
    results = list(Ledger(redis.Redis.from_url(url), spec.id).iter_results())  # type: ignore[attr-defined]
    assert len(results) == 10 and {r.status for r in results} == {Status.ok}
    gpu_of_pid: dict[float, set[float]] = {}
    for r in results:
        gpu_of_pid.setdefault(r.scores["pid"], set()).add(r.scores["gpu"])
    assert all(len(gpus) == 1 for gpus in gpu_of_pid.values())  # a child keeps its GPU
    assert len(gpu_of_pid) >= 5  # 10 tasks, 2 per child: children were replaced
    assert {r.scores["gpu"] for r in results} == {0.0, 1.0}  # no GPU left idle
    for a in results:
        for b in results:
            assert a.started_at and a.finished_at and b.started_at and b.finished_at
            overlap = a.started_at < b.finished_at and b.started_at < a.finished_at
            if a is not b and overlap:
                assert a.scores["gpu"] != b.scores["gpu"], (a, b)
    if not torch.cuda.is_available():
        assert {r.device for r in results} == {"cpu"}  # no CUDA here: same code on the CPU


@pytest.mark.slow
def test_two_children_share_each_gpu(private_redis: LocalRedis, tmp_path: Path) -> None:
    """``--gpus 0,1 --children-per-gpu 2`` on the CPU: four children, two pinned to each id,
    running side by side, and never more than two on one id at a time."""
    url = private_redis.url
    with evofleet_worker(url, "shared@127.0.0.1", "--gpus", "0,1", "--children-per-gpu", "2",
                         log=tmp_path / "worker.log", visible="0,1"):
        spec = probe_spec([{"id": f"c{i}", "params": {"seconds": 0.5}} for i in range(12)])
        generation = run_spec(spec, url, timeout_s=90)
        assert generation.wait(0) == "complete"
    results = list(Ledger(redis.Redis.from_url(url), spec.id).iter_results())  # type: ignore[attr-defined]
    assert len(results) == 12 and {r.status for r in results} == {Status.ok}
    pids_of_gpu: dict[float, set[float]] = {}
    for r in results:
        pids_of_gpu.setdefault(r.scores["gpu"], set()).add(r.scores["pid"])
    assert {gpu: len(pids) for gpu, pids in pids_of_gpu.items()} == {0.0: 2, 1.0: 2}
    for a in results:  # at the instant each candidate starts, at most 2 run on its GPU
        running = [b for b in results if b.scores["gpu"] == a.scores["gpu"]
                   and b.started_at <= a.started_at < b.finished_at]  # type: ignore[operator]
        assert len(running) <= 2, (a, running)
    assert max(len([b for b in results if b.started_at <= a.started_at < b.finished_at])  # type: ignore[operator]
               for a in results) >= 3  # the children really ran side by side


@pytest.mark.slow
def test_child_past_the_memory_limit_is_replaced(private_redis: LocalRedis, tmp_path: Path) -> None:
    """``--max-memory-per-child``: a child that grew past the limit finishes its candidate and is
    replaced; below the limit it is kept."""
    url = private_redis.url
    log = tmp_path / "worker.log"
    candidates = [{"id": "light1", "priority": "critical", "params": {}},
                  {"id": "light2", "priority": "critical", "params": {}},
                  {"id": "hog", "priority": "high", "params": {"hold_mb": 1200}},
                  {"id": "after", "priority": "low", "params": {}}]
    with evofleet_worker(url, "mem@127.0.0.1", "--gpus", "0", "--concurrency", "1",
                         "--max-memory-per-child", "1000", log=log):
        spec = probe_spec(candidates)
        assert run_spec(spec, url, timeout_s=60).wait(0) == "complete"
    results = {r.candidate_id: r
               for r in Ledger(redis.Redis.from_url(url), spec.id).iter_results()}  # type: ignore[attr-defined]
    assert {r.status for r in results.values()} == {Status.ok}
    pid = {name: r.scores["pid"] for name, r in results.items()}
    assert pid["light1"] == pid["light2"] == pid["hog"], log.read_text()[-3000:]  # below: kept
    assert pid["after"] != pid["hog"]
    assert "exited with" not in log.read_text()  # a recycle, not a crash


@pytest.mark.slow
@pytest.mark.parametrize("chunk_size", [1, 3])
def test_broken_cuda_context_replaces_the_child_and_counts_once(
    private_redis: LocalRedis, tmp_path: Path, chunk_size: int
) -> None:
    """The broken candidate is an ``error`` result; its child exits and a new one serves the
    rest; the chord counts every task once (the summary, written by the chord body, has all)."""
    url = private_redis.url
    log = tmp_path / "worker.log"
    candidates = [{"id": "first", "priority": "critical", "params": {}},
                  {"id": "broken", "priority": "high", "params": {"broken": True}}]
    # With chunk_size 3, these two share the broken one's message: they are re-sent alone.
    candidates += [{"id": f"high{i}", "priority": "high", "params": {}} for i in range(2)]
    candidates += [{"id": f"low{i}", "priority": "low", "params": {"seconds": 0.2}}
                   for i in range(2)]
    with evofleet_worker(url, "broken@127.0.0.1", "--gpus", "auto", "--concurrency", "1",
                         log=log, visible=""):
        spec = probe_spec(candidates, chunk_size=chunk_size)
        generation = run_spec(spec, url, timeout_s=60)
        assert generation.wait(0) == "complete"
    client = redis.Redis.from_url(url)
    ledger = Ledger(client, spec.id)  # type: ignore[attr-defined]
    results = {r.candidate_id: r for r in ledger.iter_results()}
    assert sorted(results) == sorted(c["id"] for c in candidates)
    broken = results.pop("broken")
    assert broken.status == Status.error and broken.attempts == 1
    assert broken.error is not None and BROKEN_CUDA in broken.error.message
    assert {r.status for r in results.values()} == {Status.ok}
    assert broken.started_at and broken.finished_at
    before = {r.scores["pid"] for r in results.values() if r.finished_at <= broken.started_at}
    after = {r.scores["pid"] for r in results.values() if r.started_at >= broken.finished_at}
    assert "first" in {c for c, r in results.items() if r.finished_at <= broken.started_at}
    assert len(before) == 1 and len(after) == 1 and before != after  # replaced, once
    assert all(r.scores["pid"] in before | after for r in results.values())
    state = ledger.state()
    assert state["recorded"] == "6" and state["n_ok"] == "5" and state["n_error"] == "1"
    assert client.xlen(ledger.keys.stream) == 6
    summary = ledger.summary()
    assert summary is not None and summary["counts"]["ok"] == 5
    assert summary["counts"]["error"] == 1
    text = log.read_text()
    assert "CUDA context broken" in text
    assert "exited with" not in text  # the recycle exit code is not reported as a crash
