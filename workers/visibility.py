"""A live worker keeps its unacknowledged messages from being re-delivered.

kombu's Redis transport scores each delivered message in the ``unacked_index`` sorted set with
its delivery time, and any worker's restore sweep puts back on its queue every message older
than ``visibility_timeout``. It cannot tell a dead worker's message from one a live worker is
still running or holds prefetched: a candidate that ran longer than the timeout was run again
on another node, and again each timeout after that. This consumer step re-scores the messages
this worker holds every quarter of the timeout (at most every minute), so while the worker
consumes, only a lost node's (no longer re-scored) come back.

It runs in Celery's event loop, which stands still during a warm shutdown: keep the timeout
above the longest warm shutdown (the running candidates finish meanwhile).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import bootsteps
from celery.worker import state

logger = logging.getLogger(__name__)

MAX_INTERVAL_S = 60.0
COPY_TRIES = 100


def refresh_interval(visibility_timeout_s: float) -> float:
    """Seconds between re-scorings: a quarter of the timeout, at most a minute."""
    return min(MAX_INTERVAL_S, visibility_timeout_s / 4)


def held_delivery_tags() -> list[str]:
    """Delivery tags of the messages this worker holds: running, and prefetched."""
    for _ in range(COPY_TRIES):
        try:  # a WeakSet, iterated in Python code: another thread may change it meanwhile
            held = list(state.reserved_requests)
            break
        except RuntimeError:  # "changed size during iteration": copy it again
            continue
    else:
        return []  # the next round re-scores them
    tags = (getattr(request.message, "delivery_tag", None) for request in held)
    return [str(tag) for tag in tags if tag is not None]


def rescore(client: Any, index_key: str, tags: list[str]) -> int:
    """Score ``tags`` as delivered now, those still in the index only (``ZADD XX``): a message
    acknowledged or restored meanwhile is not put back. How many were re-scored."""
    if not tags:
        return 0
    return int(client.zadd(index_key, dict.fromkeys(tags, time.time()), xx=True, ch=True) or 0)


class KeepVisible(bootsteps.StartStopStep):
    """Re-scores this worker's unacknowledged messages from Celery's event loop.

    Starts with the consumer, so the first re-scoring after a reconnect comes before this
    worker's own restore sweep.
    """

    label = "evofleet keep-visible"
    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self.tref: Any = None

    def start(self, c: Any) -> None:
        channel: Any = getattr(c.task_consumer, "channel", None)
        if getattr(channel, "unacked_index_key", None) is None:
            return  # not the Redis transport (the in-memory one of the unit tests)
        self.refresh(channel)
        self.tref = c.timer.call_repeatedly(refresh_interval(float(channel.visibility_timeout)),
                                            self.refresh, (channel,), priority=10)

    def stop(self, c: Any) -> None:
        if self.tref is not None:
            c.timer.cancel(self.tref)
            self.tref = None

    shutdown = stop

    @staticmethod
    def refresh(channel: Any) -> None:
        tags = held_delivery_tags()
        try:
            with channel.conn_or_acquire() as client:
                rescore(client, channel.unacked_index_key, tags)
        except channel.connection_errors as exc:  # the consumer reconnects; the next one counts
            logger.warning("could not keep %d message(s) visible: %s", len(tags), exc)
