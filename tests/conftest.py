"""Shared fixtures: a private redis-server and real ``celery worker`` subprocesses."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from orchestration.api import launch
from orchestration.generation import Generation
from orchestration.local_cluster import LocalRedis, LocalWorker
from orchestration.spec_loading import spec_from_dict

READY_TIMEOUT_S = 90.0


@pytest.fixture(scope="session")
def redis_server() -> Iterator[LocalRedis]:
    """One private redis-server on a free loopback port for the whole session."""
    server = LocalRedis().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: LocalRedis) -> str:
    return redis_server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def session_worker(
    redis_server: LocalRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalWorker]:
    """A ``celery -A workers worker`` subprocess (2 pool children) shared by the session."""
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    worker = LocalWorker(redis_server.url, concurrency=2, hostname="session@127.0.0.1", log_path=log)
    worker.start()
    client = redis.Redis.from_url(redis_server.url)
    worker.wait_ready(client, timeout_s=READY_TIMEOUT_S)
    client.close()
    yield worker
    worker.stop()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[LocalRedis]:
    """A redis-server of this test's own, for tests whose queues must be empty."""
    server = LocalRedis().start()
    yield server
    server.stop()


def unique_id(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def make_spec(candidates: list[dict[str, Any]], **fields: Any) -> Any:
    """A validated spec with test-friendly defaults (fast batches, short limits)."""
    data: dict[str, Any] = {
        "id": unique_id(),
        "evaluator": "zdt1",
        "objectives": {"f1": "min", "f2": "min"},
        "batch_size": 10,
        "batch_timeout": 0.2,
        "soft_time_limit": 20,
        "time_limit": 30,
        "deadline": 120,
        "candidates": candidates,
    }
    data.update(fields)
    return spec_from_dict(data, source="test")


def run_spec(spec: Any, url: str, timeout_s: float = 120.0, **kwargs: Any) -> Generation:
    """Launch against ``url`` and wait for the end (raises TimeoutError past ``timeout_s``)."""
    generation = launch(spec, broker_url=url, **kwargs)
    generation.wait(timeout_s)
    return generation
