"""One Redis client per process, built from a URL (password and rediss:// TLS included)."""

from __future__ import annotations

import os
from functools import cache

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry


def connect(
    url: str, *, socket_timeout_s: float = 30.0, max_connections: int | None = None
) -> redis.Redis:
    """A client that reconnects with backoff when Redis restarts (``max_connections``: its
    pool's cap, redis-py's 100 when None)."""
    client = redis.Redis.from_url(
        url,
        max_connections=max_connections,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=10.0,
        health_check_interval=15,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=20),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )
    return client


@cache
def _client_for(url: str, pid: int) -> redis.Redis:
    return connect(url)


def client_for(url: str) -> redis.Redis:
    """This process's client for ``url`` (a forked child gets its own)."""
    return _client_for(url, os.getpid())
