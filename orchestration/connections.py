"""Launcher connections shared by every launch of a process: a Celery app and Redis clients per URL.

An optimizer loop launches thousands of small generations; building a Celery app and opening Redis
connections for each would cost more than the generation itself. Closed at interpreter exit.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

import redis
from celery import Celery

from workers.recent import RecentMap

MAX_SHARED = 8  # deployments kept open at once; the least recently used one is closed


@dataclass
class LauncherConnections:
    """What one deployment's launches share: the app, the ledger's client and a quick probe."""

    app: Celery
    client: redis.Redis  # the result backend, where the ledger lives
    probe: redis.Redis  # no retries, short timeouts: one PING before each launch

    def close(self) -> None:
        """Drop the sockets; a generation still using them reconnects on its next command."""
        for client in (self.client, self.probe):
            try:
                client.close()
            except redis.RedisError:  # closing a socket to a Redis that is gone
                pass
        self.app.close()


ConnectionKey = tuple[int, str, str, str]


class SharedConnections:
    """A bounded, thread-safe cache of LauncherConnections keyed by deployment and process."""

    def __init__(self, limit: int = MAX_SHARED) -> None:
        self._lock = threading.Lock()
        self._open: RecentMap[ConnectionKey, LauncherConnections] = RecentMap(limit)

    @staticmethod
    def key(broker_url: str, backend_url: str, settings: str) -> ConnectionKey:
        # The pid: a forked child must not share its parent's sockets. The settings: the app
        # carries them (retention, artifact store options), so other settings need another.
        return (os.getpid(), broker_url, backend_url, settings)

    def get(self, key: ConnectionKey) -> LauncherConnections | None:
        with self._lock:
            return self._open.get(key)

    def get_or_open(
        self, key: ConnectionKey, opener: Callable[[], LauncherConnections]
    ) -> tuple[LauncherConnections, bool]:
        """The cached connections for ``key``, or new ones from ``opener``; True when new."""
        found = self.get(key)
        if found is not None:
            return found, False
        fresh = opener()  # outside the lock: it may wait on a slow Redis
        evicted: list[LauncherConnections] = []
        with self._lock:
            raced = self._open.get(key)
            if raced is None:
                evicted = self._open.put(key, fresh)
        if raced is not None:
            fresh.close()
            return raced, False
        for old in evicted:
            old.close()
        return fresh, True

    def close_all(self) -> None:
        with self._lock:
            dropped = self._open.pop_all()
        for connections in dropped:
            connections.close()

    def __len__(self) -> int:
        return len(self._open)


SHARED = SharedConnections()
atexit.register(SHARED.close_all)
