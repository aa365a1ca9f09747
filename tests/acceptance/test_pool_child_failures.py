"""A pool child that dies (SIGKILL, sys.exit) or hits the hard time limit becomes a result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.acceptance.conftest import Cluster, wait_until
from tests.conftest import make_spec, run_spec
from tests.fault_evaluators import runs
from workers.contract import Status
from workers.ledger import Ledger

FAULTY = "tests.fault_evaluators:faulty"
CRASH_RETRIES = 1


def _faulty_spec(log: Path, modes: dict[str, dict[str, object]], **limits: object) -> Any:
    """A spec of FAULTY candidates (one per mode, each logging its runs to ``log``)."""
    candidates = [{"id": cid, "params": {"log": str(log), **params}} for cid, params in modes.items()]
    fields: dict[str, object] = {"crash_retries": CRASH_RETRIES, "deadline": 60, **limits}
    return make_spec(candidates, evaluator=FAULTY, objectives={"f": "max"}, **fields)


def _pool_children(cluster: Cluster) -> set[int]:
    return {child.pid for child in psutil.Process(cluster.workers[0].pid).children()}


@pytest.mark.slow
def test_lost_child_is_retried_then_crashed_and_the_worker_keeps_serving(
    cluster: Cluster, tmp_path: Path
) -> None:
    log = tmp_path / "runs.log"
    modes: dict[str, dict[str, object]] = {
        "killer": {"mode": "kill"},
        "exiter": {"mode": "exit", "code": 7},
        **{f"ok{i}": {"seconds": 0.05, "value": i} for i in range(6)},
    }
    spec = _faulty_spec(log, modes, soft_time_limit=5, time_limit=6)
    generation = run_spec(spec, cluster.url, timeout_s=60)

    assert generation.wait(0) == "complete"
    ledger = Ledger(cluster.client, spec.id)
    results = {r.candidate_id: r for r in ledger.iter_results()}
    assert set(results) == set(modes)
    killer, exiter = results["killer"], results["exiter"]
    for result in (killer, exiter):
        assert result.status is Status.crashed
        assert result.attempts == CRASH_RETRIES + 1
        assert result.error is not None and result.error.type == "WorkerLostError"
    assert killer.error is not None and killer.error.signal == "SIGKILL"
    assert killer.error.exitcode == -9
    assert exiter.error is not None and exiter.error.exitcode == 7
    for i in range(6):
        assert results[f"ok{i}"].status is Status.ok
        assert results[f"ok{i}"].scores == {"f": float(i)}
    # Each poison candidate ran exactly crash_retries + 1 times, never again.
    counts = runs(log)
    assert counts["killer"] == counts["exiter"] == CRASH_RETRIES + 1
    assert all(counts[f"ok{i}"] == 1 for i in range(6))
    # The chord body ran on the worker side and counted every result once.
    assert ledger.status() == "complete"
    summary = ledger.summary()
    assert summary is not None and summary["counts"]["crashed"] == 2
    assert summary["counts"]["ok"] == 6 and summary["recorded"] == 8
    # The same worker serves the next generation.
    later = make_spec([{"id": "after", "params": {"value": 3}}], evaluator=FAULTY,
                      objectives={"f": "max"})
    assert run_spec(later, cluster.url, timeout_s=30).wait(0) == "complete"
    assert Ledger(cluster.client, later.id).result("after").status is Status.ok  # type: ignore[union-attr]


@pytest.mark.slow
def test_a_child_that_kills_itself_is_crashed_never_timeout_under_a_short_hard_limit(
    cluster: Cluster, tmp_path: Path
) -> None:
    # Celery finds a dead child only at its 5 s maintenance when the exit races the reaping
    # (or, as here, a grandchild keeps the child's pipes open); with a 4 s hard limit the
    # limit fired first and some of these were recorded as timeout.
    log = tmp_path / "runs.log"
    modes: dict[str, dict[str, object]] = {
        f"killer{i}": {"mode": "kill", "linger": 8} for i in range(3)
    }
    spec = _faulty_spec(log, modes, soft_time_limit=2, time_limit=4)
    generation = run_spec(spec, cluster.url, timeout_s=60)

    assert generation.wait(0) == "complete"
    results = {r.candidate_id: r for r in Ledger(cluster.client, spec.id).iter_results()}
    assert set(results) == set(modes)
    for cid, result in results.items():
        assert result.status is Status.crashed, (cid, result.error)
        assert result.attempts == CRASH_RETRIES + 1
        assert result.error is not None and result.error.signal == "SIGKILL"
        assert result.error.exitcode == -9
        assert result.params == {"log": str(log), **modes[cid]}  # echoed by the main process
    assert runs(log) == dict.fromkeys(modes, CRASH_RETRIES + 1)
    # Found dead within a fraction of a second (generous bound: well under the 4 s limit).
    last_run = {line.split()[0]: float(line.split()[2]) for line in log.read_text().splitlines()}
    for cid, result in results.items():
        assert result.finished_at is not None
        assert result.finished_at.timestamp() - last_run[cid] < 3.0, cid


@pytest.mark.slow
def test_a_crash_inside_a_chunk_reruns_the_unfinished_candidates_alone(
    cluster: Cluster, tmp_path: Path
) -> None:
    log = tmp_path / "runs.log"
    modes: dict[str, dict[str, object]] = {
        "a": {}, "b": {"mode": "kill"}, "c": {}, "d": {},
    }
    spec = _faulty_spec(log, modes, crash_retries=0, chunk_size=4, soft_time_limit=5, time_limit=6)
    generation = run_spec(spec, cluster.url, timeout_s=60)

    assert generation.wait(0) == "complete"
    results = {r.candidate_id: r for r in Ledger(cluster.client, spec.id).iter_results()}
    assert {cid: r.status for cid, r in results.items()} == {
        "a": Status.ok, "b": Status.crashed, "c": Status.ok, "d": Status.ok,
    }
    counts = runs(log)
    # "a" finished inside the chunk; "b" killed it (not charged to "b"), then ran alone
    # crash_retries + 1 = 1 time; "c" and "d" had not started and ran alone once.
    assert counts == {"a": 1, "b": 2, "c": 1, "d": 1}
    assert results["b"].attempts == 1


@pytest.mark.slow
def test_hard_time_limit_becomes_timeout_and_the_child_is_replaced(
    cluster: Cluster, tmp_path: Path
) -> None:
    log = tmp_path / "runs.log"
    modes: dict[str, dict[str, object]] = {
        "stuck": {"mode": "hang", "seconds": 30},
        "polite": {"seconds": 0.05},
    }
    spec = _faulty_spec(log, modes, soft_time_limit=1, time_limit=2)
    generation = run_spec(spec, cluster.url, timeout_s=40)

    assert generation.wait(0) == "complete"
    ledger = Ledger(cluster.client, spec.id)
    stuck = ledger.result("stuck")
    assert stuck is not None and stuck.status is Status.timeout
    assert stuck.error is not None and stuck.error.type == "TimeLimitExceeded"
    assert stuck.error.message == "hard time limit (2s) exceeded"
    assert stuck.attempts == 1
    assert runs(log)["stuck"] == 1  # a hard time limit is not retried
    assert ledger.result("polite").status is Status.ok  # type: ignore[union-attr]
    # The killed child is gone and the pool is back to two children.
    stuck_pid = int(log.read_text().split("stuck ")[1].split()[0])
    wait_until(
        lambda: len(c := _pool_children(cluster)) == 2 and stuck_pid not in c,
        10, "the killed child to be replaced",
    )
    later = make_spec([{"id": "after"}], evaluator=FAULTY, objectives={"f": "max"})
    assert run_spec(later, cluster.url, timeout_s=30).wait(0) == "complete"


@pytest.mark.slow
def test_a_child_that_dies_before_the_evaluation_starts_cannot_loop(cluster: Cluster) -> None:
    # The evaluator's module exits on import, before the attempt is counted in the ledger:
    # the main process counts the losses in the re-sent message and stops after the limit.
    spec = make_spec(
        [{"id": "doomed"}], evaluator="tests.acceptance.exit_on_import:evaluate",
        objectives={"f": "max"}, crash_retries=CRASH_RETRIES, soft_time_limit=5, time_limit=6,
    )
    generation = run_spec(spec, cluster.url, timeout_s=40)

    assert generation.wait(0) == "complete"
    result = Ledger(cluster.client, spec.id).result("doomed")
    assert result is not None and result.status is Status.crashed
    assert result.error is not None and result.error.exitcode == 5
    assert result.attempts == CRASH_RETRIES + 1
