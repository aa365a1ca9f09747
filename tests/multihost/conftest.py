"""The multihost fleet: Redis, node1, node2 (and node3 to join) and a launcher, each a namespace."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.multihost.netns import Fabric, sweep_stale, unavailable_reason
from workers.contract import EvaluationResult
from workers.ledger import Ledger

VISIBILITY_TIMEOUT_S = 10  # short: a cut-off node's candidates come back within a scenario
FLEET_ENV = {"EVOFLEET_VISIBILITY_TIMEOUT_S": str(VISIBILITY_TIMEOUT_S)}
NODES = ("node1", "node2")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    marked = [item for item in items if item.get_closest_marker("multihost") is not None]
    reason = unavailable_reason() if marked else None
    if reason:
        for item in marked:
            item.add_marker(pytest.mark.skip(reason=reason))


class Fleet:
    """A Fabric with Redis and worker nodes running, and helpers to launch and inspect."""

    def __init__(self, fabric: Fabric) -> None:
        self.fabric = fabric
        self.url = fabric.redis_url()
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.launches = 0

    # -- nodes ------------------------------------------------------------------
    def start_nodes(self, *hosts: str, url: str | None = None) -> None:
        """Start workers on ``hosts`` (at once) and wait until each consumes."""
        for host in hosts:
            self.workers[host] = self.fabric.start_worker(host, url or self.url, env=FLEET_ENV)
        for host in hosts:
            self.fabric.wait_worker(host, self.workers[host])

    def stop_node(self, host: str, timeout_s: float = 60.0) -> int:
        """Warm shutdown (SIGTERM to the main process only, as systemd's KillMode=mixed)."""
        process = self.workers.pop(host)
        process.terminate()
        return process.wait(timeout=timeout_s)

    def stacks(self, host: str) -> str:
        """The end of ``host``'s log after its worker logged every thread's stack (Celery's
        SIGUSR1 handler): what a node that stopped taking work is stuck in."""
        if self.alive(host):
            os.kill(self.workers[host].pid, signal.SIGUSR1)
            time.sleep(1.0)
        return self.fabric.log(f"{host}.log")[-6000:]

    def alive(self, host: str) -> bool:
        return host in self.workers and self.workers[host].poll() is None

    def children(self, host: str) -> set[int]:
        """Pids of a node's pool children."""
        return {child.pid for child in psutil.Process(self.workers[host].pid).children()}

    # -- generations -------------------------------------------------------------
    def write_spec(self, name: str, candidates: list[dict[str, Any]], **fields: Any) -> Path:
        spec = {
            "id": f"{self.fabric.prefix}-{name}",
            "evaluator": "tests.fault_evaluators:faulty",
            "objectives": {"f": "max"},
            "batch_size": 20,
            "batch_timeout": 0.5,
            "soft_time_limit": 7,
            "time_limit": 8,
            "deadline": 240,
            "chunk_size": 1,
            "candidates": candidates,
            **fields,
        }
        path = self.fabric.workdir / f"{name}.json"
        path.write_text(json.dumps(spec))
        return path

    def launch(self, spec: Path, *, url: str | None = None) -> subprocess.Popen[bytes]:
        """``evofleet launch`` on the launcher host, writing ``<spec>.jsonl`` and its summary."""
        out = spec.with_suffix(".jsonl")
        return self.fabric.spawn("launcher", [
            str(Path(sys.executable).with_name("evofleet")), "launch", str(spec),
            "--broker", url or self.url, "--out", str(out), "--quiet",
        ], log=f"launch-{spec.stem}.log", env=FLEET_ENV)

    def generation_id(self, spec: Path) -> str:
        return str(json.loads(spec.read_text())["id"])

    def ledger_view(self, generation_id: str) -> dict[str, Any]:
        """What Redis holds for a generation: state, every result, stream length."""
        def read() -> dict[str, Any]:
            client = self.fabric.redis()
            ledger = Ledger(client, generation_id)
            return {
                "state": {k: v for k, v in ledger.state().items()},
                "status": ledger.status(),
                "results": list(ledger.iter_results()),
                "stream": int(client.xlen(ledger.keys.stream)),
            }
        return self.fabric.call("redis", read)

    def recorded(self, generation_id: str) -> int:
        def read() -> int:
            state = Ledger(self.fabric.redis(), generation_id).keys.state
            return int(self.fabric.redis().hget(state, "recorded") or 0)
        return self.fabric.call("redis", read)

    def status(self, generation_id: str) -> str | None:
        return self.fabric.call("redis", lambda: Ledger(self.fabric.redis(), generation_id).status())

    def file_results(self, spec: Path) -> list[EvaluationResult]:
        path = spec.with_suffix(".jsonl")
        lines = path.read_text().splitlines() if path.exists() else []
        return [EvaluationResult.model_validate_json(line) for line in lines]

    def finish(self, process: subprocess.Popen[bytes], spec: Path, timeout_s: float) -> int:
        """Wait for a launcher; its log and the candidates still without a result go into
        the failure message."""
        try:
            return process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            generation = self.generation_id(spec)
            ids = {c["id"] for c in json.loads(spec.read_text())["candidates"]}
            missing = ids - {r.candidate_id for r in self.ledger_view(generation)["results"]}
            pytest.fail(f"launcher still running after {timeout_s}s; no result yet for "
                        f"{sorted(missing)}: {self.fabric.log(f'launch-{spec.stem}.log')[-3000:]}")


def assert_one_result_each(fleet: Fleet, spec: Path, ids: list[str]) -> dict[str, EvaluationResult]:
    """Every candidate has exactly one result: in the ledger, its stream and the output file."""
    view = fleet.ledger_view(fleet.generation_id(spec))
    results = {r.candidate_id: r for r in view["results"]}
    assert sorted(results) == sorted(ids)
    assert int(view["state"]["recorded"]) == len(ids)
    assert view["stream"] == len(ids)
    assert view["status"] == "complete"
    summary = json.loads(spec.with_suffix(".jsonl.summary.json").read_text())
    assert (summary["status"], summary["recorded"]) == ("complete", len(ids))
    rows = fleet.file_results(spec)
    assert sorted(r.candidate_id for r in rows) == sorted(ids)  # each once, none missing
    for row in rows:  # the file holds what the ledger holds (first result wins in both)
        assert row == results[row.candidate_id]
    return results




@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed scenario's report carries each live node's thread stacks: a node that stopped
    taking work shows where it is stuck."""
    outcome = yield
    report = outcome.get_result()
    fleet = getattr(item, "funcargs", {}).get("fleet")
    if report.when == "call" and report.failed and isinstance(fleet, Fleet):
        for host in list(fleet.workers):
            report.sections.append((f"{host} stacks", fleet.stacks(host)))


@pytest.fixture(scope="module")
def fleet_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    sweep_stale()
    fabric = Fabric(tmp_path_factory.mktemp("fleet"),
                    hosts=("redis", "node1", "node2", "node3", "launcher"))
    try:
        fabric.start_redis()
        fleet = Fleet(fabric)
        fleet.start_nodes(*NODES)
        yield fleet
    finally:
        fabric.close()


@pytest.fixture
def fleet(fleet_module: Fleet) -> Iterator[Fleet]:
    """The module's fleet, whole again: links healed, Redis up, node1 and node2 consuming."""
    fleet = fleet_module
    fabric = fleet.fabric
    for host in fabric.hosts:
        fabric.heal(host)
    if fabric.redis_process is None or fabric.redis_process.poll() is not None:
        fabric.start_redis()
    missing = [host for host in NODES if not fleet.alive(host)]
    if missing:
        fleet.start_nodes(*missing)
    yield fleet
    for host in list(fleet.workers):
        if host not in NODES:
            fleet.stop_node(host)
