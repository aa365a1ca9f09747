"""Backpressure (at most max_in_flight queued) and the Python API (launch, wait, results, stats)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from orchestration.api import launch
from tests.acceptance.conftest import Cluster, recorded, wait_until
from tests.conftest import make_spec
from workers.contract import PRIORITIES, Status
from workers.ledger import Ledger

FAULTY = "tests.fault_evaluators:faulty"


@pytest.mark.slow
def test_redis_never_holds_more_than_max_in_flight_queued_candidates(cluster: Cluster) -> None:
    max_in_flight = 4
    candidates = [
        {"id": f"c{i:02d}", "priority": PRIORITIES[i % 4], "params": {"seconds": 0.05}}
        for i in range(40)
    ]
    spec = make_spec(candidates, evaluator=FAULTY, objectives={"f": "max"},
                     max_in_flight=max_in_flight)
    queued: list[int] = []
    submitted: list[int] = []
    stop = threading.Event()
    state_key = Ledger(cluster.client, spec.id).keys.state

    def sample() -> None:
        while not stop.is_set():
            with cluster.client.pipeline(transaction=True) as pipe:
                for queue in PRIORITIES:
                    pipe.llen(queue)
                pipe.hget(state_key, "submitted")
                *lengths, sent = pipe.execute()
            queued.append(sum(lengths))
            submitted.append(int(sent or 0))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        generation = launch(spec, broker_url=cluster.url)
        assert generation.wait(60) == "complete"
    finally:
        stop.set()
        sampler.join(5)

    assert len(queued) > 50  # the sampler really watched the run
    assert max(queued) <= max_in_flight
    assert max(queued) >= 1
    # The rest went out as results came back: submission grew in steps, not all at once.
    growing = [n for n in submitted if 0 < n < len(candidates)]
    assert growing and min(growing) <= max_in_flight
    assert len(set(growing)) > 5
    assert Ledger(cluster.client, spec.id).state()["recorded"] == str(len(candidates))


@pytest.mark.slow
def test_python_api_wait_from_several_threads_results_and_stats(cluster: Cluster) -> None:
    candidates = [{"id": f"c{i:02d}", "params": {"seconds": 0.15, "value": i}} for i in range(16)]
    spec = make_spec(candidates, evaluator=FAULTY, objectives={"f": "max"}, batch_size=3)
    batches: list[int] = []
    generation = launch(spec, broker_url=cluster.url, on_batch=lambda b: batches.append(len(b)))

    with pytest.raises(TimeoutError):
        generation.wait(0.01)
    wait_until(lambda: recorded(cluster.client, spec.id) >= 3, 30, "first results")
    started = time.monotonic()
    partial = generation.results()
    assert time.monotonic() - started < 1.0  # does not block until the end
    assert 3 <= len(partial) < len(candidates)
    assert all(r.status is Status.ok for r in partial)
    running = generation.stats()
    assert running["total"] == len(candidates)
    assert running["submitted"] >= running["collected"]
    assert running["in_flight"] == running["submitted"] - running["collected"]

    with ThreadPoolExecutor(max_workers=3) as pool:
        statuses = list(pool.map(lambda _: generation.wait(60), range(3)))
    assert statuses == ["complete"] * 3
    assert generation.wait(0) == "complete"  # again, at once

    results = generation.results()
    assert sorted(r.candidate_id for r in results) == [c["id"] for c in candidates]
    assert {r.candidate_id: r.scores["f"] for r in results} == {
        f"c{i:02d}": float(i) for i in range(16)
    }
    stats = generation.stats()
    assert stats["submitted"] == stats["collected"] == len(candidates)
    assert stats["in_flight"] == 0
    assert stats["counts"] == {s.value: (16 if s is Status.ok else 0) for s in Status}
    assert stats["batches"] == len(batches) and sum(batches) == 16 and max(batches) <= 3
    assert stats["throughput_per_s"] > 0
    summary = generation.summary()
    assert summary is not None and summary["status"] == "complete"
    assert summary["best"]["f"]["candidate_id"] == "c15"


@pytest.mark.slow
def test_python_api_cancel_records_the_rest_cancelled(cluster: Cluster) -> None:
    candidates = [{"id": f"c{i:02d}", "params": {"seconds": 0.3}} for i in range(12)]
    spec = make_spec(candidates, evaluator=FAULTY, objectives={"f": "max"})
    generation = launch(spec, broker_url=cluster.url)
    wait_until(lambda: recorded(cluster.client, spec.id) >= 2, 30, "first results")

    generation.cancel()

    assert generation.wait(20) == "cancelled"
    counts = generation.stats()["counts"]
    assert counts["ok"] >= 2 and counts["cancelled"] >= 1
    assert counts["ok"] + counts["cancelled"] == len(candidates)
    ledger = Ledger(cluster.client, spec.id)
    assert ledger.status() == "cancelled"
    assert len(list(ledger.iter_results())) == len(candidates)
    assert ledger.collector() is None  # the lease is given back at the end
