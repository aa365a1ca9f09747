"""Many small generations from one process: each ends with its results, on shared connections."""

from __future__ import annotations

import os
import time

import psutil
import pytest
import redis

from orchestration.api import launch, launcher_app
from orchestration.local_cluster import LocalWorker
from orchestration.submit import Submitter, create_generation
from tests.conftest import make_spec
from workers.keys import GENERATIONS_INDEX
from workers.ledger import Ledger

GENERATIONS = 200


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def connections_to(port: int) -> int:
    """This process's TCP connections to the Redis on ``port``."""
    return sum(
        1 for conn in psutil.Process().net_connections(kind="tcp")
        if conn.raddr and conn.raddr.port == port
    )


@pytest.mark.slow
def test_two_hundred_one_candidate_generations_complete_on_bounded_connections(
    redis_url: str, session_worker: LocalWorker, redis_client: redis.Redis
) -> None:
    def one(index: int) -> str:
        spec = make_spec([{"id": "only", "params": {"x": [index / GENERATIONS, 0.5, 0.5]}}])
        generation = launch(spec, broker_url=redis_url)
        assert generation.wait(60) == "complete"
        results = generation.results()
        assert [(r.candidate_id, r.status.value) for r in results] == [("only", "ok")]
        assert results[0].scores["f1"] == pytest.approx(index / GENERATIONS)
        summary = generation.summary()
        assert summary is not None and summary["counts"]["ok"] == 1 == summary["recorded"]
        return spec.id

    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    one(0)  # the first launch opens this process's shared app and connections
    clients_before = len(redis_client.client_list())
    fds_before, mine_before = open_fds(), connections_to(port)
    ids = [one(i) for i in range(1, GENERATIONS + 1)]

    # Nothing is opened per generation: what the loop holds is what one generation needs.
    assert open_fds() <= fds_before + 2, (fds_before, open_fds())
    assert connections_to(port) <= mine_before + 1, (mine_before, connections_to(port))
    # Redis's own count: the worker's pool children may open a connection or two of their own
    # (the first chord body each runs), never one per generation.
    assert len(redis_client.client_list()) <= clients_before + 8
    for generation_id in ids[-3:]:
        ledger = Ledger(redis_client, generation_id)
        assert ledger.status() == "complete"
        for key in ledger.keys.all():  # every key the generation left expires
            assert redis_client.exists(key) == 0 or redis_client.ttl(key) > 0, key
        assert redis_client.zscore(GENERATIONS_INDEX, generation_id) is not None


@pytest.mark.slow
@pytest.mark.parametrize("chunk_size", [1, 2])
def test_the_chord_body_completes_a_generation_whose_launcher_is_gone(
    redis_url: str, session_worker: LocalWorker, redis_client: redis.Redis, chunk_size: int
) -> None:
    # Submitted as a launcher does, but nobody collects: the worker side must end it alone.
    spec = make_spec([{"id": f"c{i}", "params": {"x": [i / 5, 0.5, 0.5]}} for i in range(5)],
                     chunk_size=chunk_size)
    app = launcher_app(redis_url)
    ledger = Ledger(redis_client, spec.id)
    create_generation(app, ledger, spec)
    submitter = Submitter(app, ledger, spec.header())
    submitter.submit_more(recorded=0)
    assert submitter.done

    deadline = time.monotonic() + 60
    while ledger.status() == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ledger.status() == "complete"
    summary = ledger.summary()
    assert summary is not None and summary["counts"]["ok"] == 5 == summary["recorded"]
    assert 0 < redis_client.ttl(ledger.keys.state)
    app.close()
