"""Re-scoring updates only messages still unacknowledged, and reads Celery's requests safely."""

from __future__ import annotations

import sys
import threading
import time
from types import SimpleNamespace

import redis
from celery.worker import state

from tests.conftest import unique_id
from workers.visibility import held_delivery_tags, refresh_interval, rescore


class FakeRequest:
    """What the step reads of a Celery request: its message's delivery tag."""

    def __init__(self, tag: str) -> None:
        self.message = SimpleNamespace(delivery_tag=tag)


def test_rescore_updates_held_messages_and_never_adds_one(redis_client: redis.Redis) -> None:
    index = unique_id("unacked_index-")
    redis_client.zadd(index, {"held": 1.0, "other": 1.0})
    before = time.time()

    # "acked" was acknowledged (so removed) between the snapshot and the re-scoring.
    assert rescore(redis_client, index, ["held", "acked"]) == 1

    assert float(redis_client.zscore(index, "held") or 0) >= before
    assert redis_client.zscore(index, "other") == 1.0
    assert redis_client.zscore(index, "acked") is None
    assert rescore(redis_client, index, []) == 0


def test_interval_is_a_quarter_of_the_timeout_up_to_a_minute() -> None:
    assert refresh_interval(2) == 0.5
    assert refresh_interval(3600) == 60.0


def test_held_tags_are_read_while_another_thread_changes_the_set() -> None:
    """Celery's reserved_requests is a WeakSet: a plain list() of it raised now and then."""
    held = [FakeRequest(f"held-{i}") for i in range(50)]
    for request in held:
        state.reserved_requests.add(request)
    stop = threading.Event()

    def churn() -> None:  # as tasks are received and finished
        while not stop.is_set():
            passing = FakeRequest("passing")
            state.reserved_requests.add(passing)
            state.reserved_requests.discard(passing)

    thread = threading.Thread(target=churn)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # the threads take turns often: the race shows within the loop
    thread.start()
    try:
        for _ in range(5000):
            assert {f"held-{i}" for i in range(50)} <= set(held_delivery_tags())
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(switch)
        for request in held:
            state.reserved_requests.discard(request)
