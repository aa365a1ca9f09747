"""Priority routing on one real worker: a backlog drains critical -> high -> normal -> low, and a
critical candidate that arrives while low ones run starts before any further low one."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from orchestration.api import launch
from orchestration.generation import Generation
from orchestration.local_cluster import LocalRedis, LocalWorker
from tests.conftest import READY_TIMEOUT_S, make_spec
from workers.contract import PRIORITIES

pytestmark = pytest.mark.slow


def sleep_spec(priority: str, count: int, seconds: float) -> object:
    candidates = [
        {"id": f"{priority}-{i}", "priority": priority, "params": {"seconds": seconds}}
        for i in range(count)
    ]
    return make_spec(candidates, evaluator="sleep", objectives={"s": "min"}, batch_size=1)


def start_worker(server: LocalRedis, tmp_path: Path) -> LocalWorker:
    worker = LocalWorker(server.url, concurrency=1, hostname=f"prio-{server.port}@127.0.0.1",
                         log_path=tmp_path / "worker.log")
    worker.start()
    client = redis.Redis.from_url(server.url)
    worker.wait_ready(client, timeout_s=READY_TIMEOUT_S)
    client.close()
    return worker


def start_times(generations: list[Generation]) -> list[tuple[float, str]]:
    rows = []
    for generation in generations:
        for result in generation.results():
            assert result.started_at is not None
            rows.append((result.started_at.timestamp(), result.priority.value))
    return sorted(rows)


def test_backlog_drains_strictly_from_highest_priority(
    private_redis: LocalRedis, tmp_path: Path
) -> None:
    # Queued lowest first, so that FIFO order would be the exact opposite of priority order.
    generations = [
        launch(sleep_spec(p, 3, 0.05), broker_url=private_redis.url)  # type: ignore[arg-type]
        for p in reversed(PRIORITIES)
    ]
    queued = redis.Redis.from_url(private_redis.url)
    deadline = time.monotonic() + 30
    while sum(queued.llen(p) for p in PRIORITIES) < 12 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [queued.llen(p) for p in PRIORITIES] == [3, 3, 3, 3]

    worker = start_worker(private_redis, tmp_path)
    try:
        for generation in generations:
            assert generation.wait(90) == "complete"
    finally:
        worker.stop()
    order = [priority for _, priority in start_times(generations)]
    assert order == [p for p in PRIORITIES for _ in range(3)]


def test_critical_arrival_starts_before_further_low_ones(
    private_redis: LocalRedis, tmp_path: Path
) -> None:
    worker = start_worker(private_redis, tmp_path)
    try:
        low = launch(sleep_spec("low", 8, 0.4), broker_url=private_redis.url)  # type: ignore[arg-type]
        client = redis.Redis.from_url(private_redis.url)
        attempts_key = low.ledger.keys.attempts
        deadline = time.monotonic() + 30
        while client.hlen(attempts_key) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        lows_started_at_arrival = client.hlen(attempts_key)
        assert 2 <= lows_started_at_arrival < 8
        critical = launch(sleep_spec("critical", 2, 0.05), broker_url=private_redis.url)  # type: ignore[arg-type]
        assert critical.wait(60) == "complete"
        assert low.wait(60) == "complete"
    finally:
        worker.stop()
    starts = start_times([low, critical])
    first_critical = next(i for i, (_, p) in enumerate(starts) if p == "critical")
    # Only the low candidate already running (or just taken) may start before the critical ones.
    assert first_critical <= lows_started_at_arrival + 1
    assert [p for _, p in starts[first_critical : first_critical + 2]] == ["critical", "critical"]
