"""A live worker keeps its unacknowledged messages from being re-delivered.

kombu's Redis transport scores each delivered message in the ``unacked_index`` sorted set with
its delivery time, and any worker's restore sweep puts back on its queue every message older
than ``visibility_timeout``. It cannot tell a dead worker's message from one a live worker is
still running or holds prefetched: a candidate that ran longer than the timeout was run again
on another node, and again each timeout after that. A thread of the worker's main process
re-scores the messages it holds every quarter of the timeout, so only a lost node's (no longer
re-scored) come back, and the timeout bounds how long those wait, not how long a candidate may
run. A thread, not the event loop: the loop stands still during a warm shutdown (running
candidates finish meanwhile) and while the consumer reconnects.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import redis
from celery import bootsteps
from celery.worker import state

from workers.redis_client import connect

logger = logging.getLogger(__name__)

MAX_INTERVAL_S = 60.0
COPY_TRIES = 100
STOPPING_POLL_S = 0.5  # after the worker stops: how often to look whether anything is held


def refresh_interval(visibility_timeout_s: float) -> float:
    """Seconds between re-scorings: a quarter of the timeout, at most a minute."""
    return min(MAX_INTERVAL_S, visibility_timeout_s / 4)


def held_delivery_tags() -> list[str]:
    """Delivery tags of the messages this worker holds: running, and prefetched."""
    for _ in range(COPY_TRIES):
        try:  # a WeakSet, iterated in Python code while the main thread changes it
            held = list(state.reserved_requests)
            break
        except RuntimeError:  # "changed size during iteration": copy it again
            continue
    else:
        return []  # the next round re-scores them
    tags = (getattr(request.message, "delivery_tag", None) for request in held)
    return [str(tag) for tag in tags if tag is not None]


class VisibilityKeeper:
    """Re-scores the held messages as delivered now, from its own thread and Redis client.

    ``ZADD XX`` only updates: a message acknowledged or restored meanwhile is not put back in
    the index. ``stop()`` lets the thread run on until the worker holds nothing.
    """

    def __init__(self, url: str, index_key: str, interval_s: float) -> None:
        self.client = connect(url, socket_timeout_s=10.0)
        self.index_key = index_key
        self.interval_s = interval_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="evofleet-keep-visible", daemon=True)

    def start(self) -> VisibilityKeeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def refresh(self, tags: list[str]) -> int:
        """Re-score ``tags`` that are still in the index; how many were."""
        if not tags:
            return 0
        changed = self.client.zadd(self.index_key, dict.fromkeys(tags, time.time()), xx=True, ch=True)
        return int(changed or 0)

    def _run(self) -> None:
        due = 0.0
        while True:
            tags = held_delivery_tags()
            if self._stopping.is_set() and not tags:
                self.client.close()
                return
            if time.monotonic() >= due:
                due = time.monotonic() + self.interval_s
                try:
                    self.refresh(tags)
                except redis.RedisError as exc:  # the client retried ~30 s; try again soon
                    logger.warning("could not keep %d message(s) visible: %s", len(tags), exc)
                    due = time.monotonic() + min(self.interval_s, 1.0)
                except Exception:  # a dead keeper would let long candidates run twice again
                    logger.exception("keeping messages visible failed; trying again")
                    due = time.monotonic() + min(self.interval_s, 1.0)
            if self._stopping.is_set():
                time.sleep(STOPPING_POLL_S)
            else:
                self._stopping.wait(max(0.0, due - time.monotonic()))


class KeepVisible(bootsteps.StartStopStep):
    """Runs a :class:`VisibilityKeeper` for a worker whose broker is Redis."""

    label = "evofleet keep-visible"

    def __init__(self, w: Any, **kwargs: Any) -> None:
        super().__init__(w, **kwargs)
        self.keeper: VisibilityKeeper | None = None

    def start(self, w: Any) -> None:
        conf = w.app.conf
        url = str(conf.broker_url or "")
        if not url.startswith(("redis://", "rediss://", "unix://")):
            return  # another transport (the in-memory one of some tests) has no such index
        options = conf.broker_transport_options or {}
        key = options.get("global_keyprefix", "") + options.get("unacked_index_key", "unacked_index")
        timeout = float(options.get("visibility_timeout", 3600))
        self.keeper = VisibilityKeeper(url, key, refresh_interval(timeout)).start()

    def stop(self, w: Any) -> None:
        if self.keeper is not None:
            self.keeper.stop()
            self.keeper = None

    shutdown = stop
