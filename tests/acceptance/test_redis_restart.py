"""Redis restarts mid-generation (AOF persistence on): workers and launcher reconnect, nothing lost."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestration.api import launch
from orchestration.local_cluster import LocalRedis
from tests.acceptance.conftest import Cluster, recorded, wait_until
from tests.conftest import make_spec
from workers.contract import Status
from workers.ledger import Ledger


@pytest.fixture
def persistent_cluster(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path, appendonly=True)
    try:
        cluster.start_worker("w1")
        yield cluster
    finally:
        cluster.close()


@pytest.mark.slow
def test_generation_survives_a_redis_restart(persistent_cluster: Cluster, tmp_path: Path) -> None:
    cluster = persistent_cluster
    candidates = [{"id": f"c{i:02d}", "params": {"seconds": 0.25, "value": i}} for i in range(24)]
    spec = make_spec(
        candidates, evaluator="tests.fault_evaluators:faulty", objectives={"f": "max"},
        soft_time_limit=5, time_limit=6, deadline=90, max_in_flight=6,
    )
    out = tmp_path / "results.jsonl"
    generation = launch(spec, broker_url=cluster.url, out=out)
    wait_until(lambda: recorded(cluster.client, spec.id) >= 4, 30, "first results")
    before = {r.candidate_id: r for r in Ledger(cluster.client, spec.id).iter_results()}

    cluster.redis.stop(remove=False)
    time.sleep(1.0)
    cluster.redis = LocalRedis(port=cluster.redis.port, workdir=tmp_path, appendonly=True).start()

    assert generation.wait(60) == "complete"
    ledger = Ledger(cluster.client, spec.id)
    results = {r.candidate_id: r for r in ledger.iter_results()}
    assert set(results) == {c["id"] for c in candidates}
    assert all(r.status is Status.ok for r in results.values())
    for cid, result in before.items():  # what was recorded before the restart survived it
        assert results[cid] == result
    assert int(ledger.state()["recorded"]) == len(candidates)
    assert cluster.client.xlen(ledger.keys.stream) == len(candidates)
    rows = out.read_text().splitlines()
    assert len(rows) == len(candidates)
    assert ledger.status() == "complete"


@pytest.mark.slow
def test_a_task_message_lost_in_a_restart_is_published_again(
    persistent_cluster: Cluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The loss kombu's Redis transport risks: a message popped (BRPOP) by a worker when Redis
    stops before its unacked record is written. Simulated exactly: the message is removed from
    its queue while no worker holds it, then Redis restarts under the launcher."""
    cluster = persistent_cluster
    candidates = [{"id": f"c{i:02d}", "params": {"seconds": 0.2, "value": i}} for i in range(12)]
    spec = make_spec(
        candidates, evaluator="tests.fault_evaluators:faulty", objectives={"f": "max"},
        soft_time_limit=5, time_limit=6, deadline=60, max_in_flight=4, chunk_size=1,
    )
    generation = launch(spec, broker_url=cluster.url)
    wait_until(lambda: recorded(cluster.client, spec.id) >= 2, 30, "first results")
    cluster.workers[0].stop()  # warm shutdown: what it had not started goes back to its queue
    queued = wait_until(lambda: cluster.client.lrange("normal", 0, -1), 10, "a queued message")
    assert cluster.client.hlen("unacked") == 0
    assert cluster.client.lrem("normal", 1, queued[0]) == 1  # what the lost pop leaves behind

    cluster.redis.stop(remove=False)
    time.sleep(1.0)
    cluster.redis = LocalRedis(port=cluster.redis.port, workdir=tmp_path, appendonly=True).start()
    cluster.start_worker("w2")

    assert generation.wait(90) == "complete"
    ledger = Ledger(cluster.client, spec.id)
    results = {r.candidate_id: r for r in ledger.iter_results()}
    assert set(results) == {c["id"] for c in candidates}
    assert all(r.status is Status.ok for r in results.values())
    assert int(ledger.state()["recorded"]) == len(candidates)  # exactly one result each
    assert cluster.client.xlen(ledger.keys.stream) == len(candidates)
    assert "1 candidate(s) lost their task message" in caplog.text
