"""Acceptance fixtures: private redis-servers and ``celery worker`` subprocesses a test may kill."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

from orchestration.local_cluster import LocalRedis, LocalWorker
from workers.ledger import Ledger

READY_TIMEOUT_S = 60.0


class Cluster:
    """One private redis-server and the workers a test starts on it; all stopped at the end."""

    def __init__(self, workdir: Path, **redis_options: Any) -> None:
        self.workdir = workdir
        self.redis = LocalRedis(workdir=workdir, **redis_options).start()
        self.client = redis.Redis.from_url(self.redis.url)
        self.workers: list[LocalWorker] = []

    @property
    def url(self) -> str:
        return self.redis.url

    def start_worker(
        self, name: str, *, concurrency: int = 2, env: dict[str, str] | None = None
    ) -> LocalWorker:
        """A worker subprocess, returned once it consumes its queues."""
        worker = LocalWorker(
            self.url,
            concurrency=concurrency,
            hostname=f"{name}-{self.redis.port}@127.0.0.1",
            env=env,
            log_path=self.workdir / f"{name}.log",
            extra_args=["--loglevel", "INFO"],
        )
        self.workers.append(worker.start())
        worker.wait_ready(self.client, timeout_s=READY_TIMEOUT_S)
        return worker

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        for worker in self.workers:
            worker.kill()
            worker.stop()
        self.client.close()
        self.redis.stop()


@contextmanager
def cluster_of(workdir: Path, *names: str, concurrency: int, env: dict[str, str]) -> Iterator[Cluster]:
    """A Cluster with one worker per name, closed at the end (also when one fails to start)."""
    cluster = Cluster(workdir)
    try:
        for name in names:
            cluster.start_worker(name, concurrency=concurrency, env=env)
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A module's own redis-server with one worker of two pool children."""
    cluster = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start_worker("w1")
        yield cluster
    finally:
        cluster.close()


def wait_until(predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """Poll ``predicate`` every 50 ms until it is truthy; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout_s}s waiting for {what}")


def recorded(client: redis.Redis, generation_id: str) -> int:
    """How many results a generation has recorded."""
    return int(client.hget(Ledger(client, generation_id).keys.state, "recorded") or 0)
