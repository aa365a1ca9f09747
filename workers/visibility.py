"""A live worker keeps its unacknowledged messages from being re-delivered.

kombu's Redis transport scores each delivered message in the ``unacked_index`` sorted set with
its delivery time, and any worker's restore sweep puts back on its queue every message older
than ``visibility_timeout``. It cannot tell a dead worker's message from one a live worker is
still running or holds prefetched: a candidate that ran longer than the timeout was run again
on another node, and again each timeout after that. This step re-scores the messages this
worker holds every quarter of the timeout, so only a lost node's (no longer re-scored) come back,
and the timeout bounds how long they wait, not how long a candidate may run.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import bootsteps
from celery.worker import state

logger = logging.getLogger(__name__)

MAX_INTERVAL_S = 60.0


def refresh_interval(visibility_timeout_s: float) -> float:
    """Seconds between re-scorings: a quarter of the timeout, at most a minute."""
    return min(MAX_INTERVAL_S, visibility_timeout_s / 4)


def held_delivery_tags() -> list[str]:
    """Delivery tags of the messages this worker holds: running, and prefetched."""
    tags = (getattr(request.message, "delivery_tag", None) for request in list(state.reserved_requests))
    return [str(tag) for tag in tags if tag is not None]


class KeepVisible(bootsteps.StartStopStep):
    """Re-scores this worker's unacknowledged messages as delivered now, in the main loop.

    ``ZADD XX`` only updates: a message acknowledged or already restored meanwhile is not put
    back in the index. Starts with the consumer, so the first re-scoring after a reconnect
    comes before this worker's own restore sweep.
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
        timeout = float(channel.visibility_timeout)
        self.refresh(channel)
        self.tref = c.timer.call_repeatedly(refresh_interval(timeout), self.refresh, (channel,),
                                            priority=10)

    def stop(self, c: Any) -> None:
        if self.tref is not None:
            c.timer.cancel(self.tref)
            self.tref = None

    shutdown = stop

    @staticmethod
    def refresh(channel: Any) -> None:
        tags = held_delivery_tags()
        if not tags:
            return
        now = time.time()
        try:
            with channel.conn_or_acquire() as client:
                client.zadd(channel.unacked_index_key, dict.fromkeys(tags, now), xx=True)
        except channel.connection_errors as exc:  # the consumer reconnects; the next one counts
            logger.warning("could not keep %d message(s) visible: %s", len(tags), exc)
