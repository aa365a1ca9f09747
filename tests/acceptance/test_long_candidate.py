"""A candidate that runs longer than ``visibility_timeout`` runs once, on a live worker.

kombu's Redis transport re-delivers any message left unacknowledged past ``visibility_timeout``,
whether its worker died or is still busy with it. A consuming worker keeps its messages'
delivery times fresh (``workers/visibility.py``), so only a lost node's candidates come back.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestration.api import launch
from tests.acceptance.conftest import Cluster, cluster_of, wait_until
from tests.conftest import make_spec
from tests.fault_evaluators import runs
from workers.contract import Status
from workers.ledger import Ledger

VISIBILITY_TIMEOUT_S = 2  # the restore sweep then runs every second
ENV = {"EVOFLEET_VISIBILITY_TIMEOUT_S": str(VISIBILITY_TIMEOUT_S)}


@pytest.fixture
def busy_cluster(tmp_path: Path) -> Iterator[Cluster]:
    # Two nodes with idle children: a re-delivered message would be taken at once.
    with cluster_of(tmp_path, "one", "two", concurrency=2, env=ENV) as cluster:
        yield cluster


def long_spec(log: Path, count: int, **fields: Any) -> Any:
    """``count`` candidates that each sleep 4 visibility timeouts, logging each start."""
    candidates = [{"id": f"c{i}", "params": {"log": str(log), "seconds": 4 * VISIBILITY_TIMEOUT_S,
                                             "value": i}} for i in range(count)]
    return make_spec(candidates, evaluator="tests.fault_evaluators:faulty", objectives={"f": "max"},
                     soft_time_limit=30, time_limit=40, deadline=90, **fields)


@pytest.mark.slow
def test_candidates_longer_than_the_visibility_timeout_run_once(
    busy_cluster: Cluster, tmp_path: Path
) -> None:
    cluster = busy_cluster
    log = tmp_path / "runs.log"
    # A chunk of two whose message outlives the timeout by more still, and one alone.
    spec = long_spec(log, 3, chunk_size=2)
    generation = launch(spec, broker_url=cluster.url)

    assert generation.wait(60) == "complete"
    results = {r.candidate_id: r for r in Ledger(cluster.client, spec.id).iter_results()}
    ids = [c.id for c in spec.candidates]
    assert {cid: r.status for cid, r in results.items()} == dict.fromkeys(ids, Status.ok)
    assert runs(log) == dict.fromkeys(ids, 1)
    assert all(r.attempts == 1 for r in results.values())
    # Re-scoring only updates (ZADD XX): acknowledged messages leave the index for good.
    wait_until(lambda: cluster.client.zcard("unacked_index") == 0, 10, "every message acked")
    assert cluster.client.hlen("unacked") == 0
