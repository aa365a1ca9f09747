"""A worker node whose main process is SIGKILLed: its unacked candidates go to another node.

kombu's Redis transport keeps a delivered, unacknowledged message in the ``unacked`` hash;
a *live* worker's ``restore_visible`` sweep (every ``unacked_restore_interval`` seconds, see
``workers/celery_app.py``) puts those older than ``visibility_timeout`` back on their queue.
So a lost node's candidates restart within visibility_timeout + one sweep interval.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from orchestration.api import launch
from tests.acceptance.conftest import Cluster, cluster_of, wait_until
from tests.conftest import make_spec
from tests.fault_evaluators import runs
from workers.contract import Status
from workers.ledger import Ledger

VISIBILITY_TIMEOUT_S = 4  # short: the lost node's candidates come back within the test
ENV = {"EVOFLEET_VISIBILITY_TIMEOUT_S": str(VISIBILITY_TIMEOUT_S)}


@pytest.fixture
def two_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    monkeypatch.setenv("EVOFLEET_VISIBILITY_TIMEOUT_S", str(VISIBILITY_TIMEOUT_S))
    with cluster_of(tmp_path, "doomed", "survivor", concurrency=1, env=ENV) as cluster:
        yield cluster


@pytest.mark.slow
def test_candidates_of_a_killed_worker_node_are_redelivered_and_counted_once(
    two_workers: Cluster, tmp_path: Path
) -> None:
    cluster = two_workers
    doomed = cluster.workers[0]
    log = tmp_path / "runs.log"
    candidates = [
        {"id": f"c{i}", "params": {"log": str(log), "seconds": 0.6, "value": i}} for i in range(8)
    ]
    spec = make_spec(
        candidates, evaluator="tests.fault_evaluators:faulty", objectives={"f": "max"},
        soft_time_limit=2, time_limit=3, crash_retries=1, deadline=60,
    )
    generation = launch(spec, broker_url=cluster.url)
    doomed_children = {p.pid for p in psutil.Process(doomed.pid).children()}

    def doomed_is_running() -> str | None:
        for line in log.read_text().splitlines() if log.exists() else []:
            cid, pid = line.split()[:2]
            if int(pid) in doomed_children:
                return cid
        return None

    lost = wait_until(doomed_is_running, 20, "the doomed worker to start a candidate")
    doomed.kill()

    assert generation.wait(40) == "complete"
    ledger = Ledger(cluster.client, spec.id)
    results = {r.candidate_id: r for r in ledger.iter_results()}
    assert set(results) == {c["id"] for c in candidates}
    assert all(r.status is Status.ok for r in results.values())
    assert (results[lost].worker or "").startswith("survivor")
    assert results[lost].attempts == 2
    assert runs(log)[lost] == 2
    # Counted once: one hash entry, one stream entry, one count per candidate.
    state = ledger.state()
    assert int(state["recorded"]) == int(state["n_ok"]) == len(candidates)
    assert cluster.client.xlen(ledger.keys.stream) == len(candidates)
    summary = ledger.summary()
    assert summary is not None and summary["recorded"] == len(candidates)
    assert ledger.status() == "complete"
