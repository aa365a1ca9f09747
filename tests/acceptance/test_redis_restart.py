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
