"""The process-wide cache of launcher connections: reuse, bound, and closing."""

from __future__ import annotations

import os

import redis
from celery import Celery

from orchestration.connections import LauncherConnections, SharedConnections


class Opened:
    """An opener that counts what it built and records what was closed (no Redis needed)."""

    def __init__(self) -> None:
        self.built: list[LauncherConnections] = []
        self.closed: list[LauncherConnections] = []

    def __call__(self) -> LauncherConnections:
        opener = self

        class Recording(LauncherConnections):
            def close(self) -> None:
                opener.closed.append(self)
                super().close()

        url = "redis://127.0.0.1:1/0"  # nothing listens: clients connect lazily, never here
        made = Recording(Celery("t", set_as_current=False), redis.Redis.from_url(url),
                         redis.Redis.from_url(url))
        self.built.append(made)
        return made


def test_the_same_deployment_gets_the_same_connections() -> None:
    shared, opener = SharedConnections(limit=2), Opened()
    key = SharedConnections.key("redis://a/0", "redis://a/0", "60")
    first, opened = shared.get_or_open(key, opener)
    again, reopened = shared.get_or_open(key, opener)
    assert opened and not reopened and first is again and len(opener.built) == 1
    assert key[0] == os.getpid()  # a forked child builds its own
    other = SharedConnections.key("redis://a/0", "redis://a/0", "120")
    assert shared.get_or_open(other, opener)[0] is not first  # retention is part of the key


def test_past_the_limit_the_least_recently_used_is_closed() -> None:
    shared, opener = SharedConnections(limit=2), Opened()
    keys = [SharedConnections.key(f"redis://h{i}/0", f"redis://h{i}/0", "60") for i in range(3)]
    shared.get_or_open(keys[0], opener)
    shared.get_or_open(keys[1], opener)
    shared.get_or_open(keys[0], opener)  # used again: h1 is now the oldest
    shared.get_or_open(keys[2], opener)
    assert len(shared) == 2
    assert opener.closed == [opener.built[1]]
    assert shared.get(keys[1]) is None and shared.get(keys[0]) is opener.built[0]


def test_close_all_closes_every_one_and_empties_the_cache() -> None:
    shared, opener = SharedConnections(limit=4), Opened()
    for i in range(3):
        shared.get_or_open(SharedConnections.key(f"redis://h{i}/0", "b", "60"), opener)
    shared.close_all()
    assert len(shared) == 0 and sorted(map(id, opener.closed)) == sorted(map(id, opener.built))
