"""Celery task events (what Flower shows): sent by a deployment's workers, not by local mode's."""

from __future__ import annotations

import time

import redis

from orchestration.local_cluster import LocalWorker, local_cluster
from tests.conftest import make_spec, run_spec

QUIET_S = 1.5  # events are flushed within the worker's next event-loop turns


def task_events_during_a_generation(url: str) -> list[str]:
    """The task-event channels Redis saw published while a small generation ran, and just after."""
    client = redis.Redis.from_url(url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe("*celeryev/task.*")
    try:
        generation = run_spec(make_spec([{"id": f"c{i}", "params": {"x": [0.1 * i, 0.5]}}
                                         for i in range(4)]), url, timeout_s=60)
        assert generation.wait(0) == "complete"
        seen: list[str] = []
        until = time.monotonic() + QUIET_S
        while time.monotonic() < until:
            message = pubsub.get_message(timeout=0.1)
            if message is not None:
                seen.append(message["channel"].decode())
        return seen
    finally:
        pubsub.close()
        client.close()


def test_a_deployed_worker_sends_task_events(redis_url: str, session_worker: LocalWorker) -> None:
    assert task_events_during_a_generation(redis_url)


def test_local_mode_workers_send_none() -> None:
    """No Flower watches local mode's private Redis: the events would only cost CPU."""
    with local_cluster() as url:
        assert task_events_during_a_generation(url) == []
