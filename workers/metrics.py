"""A worker node's Prometheus metrics: results, queue depth, running candidates, evaluation time
and lost pool children, written by every pool child and served by the worker's main process."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import redis
from celery.signals import worker_init, worker_process_shutdown, worker_ready, worker_shutdown
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server, values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from workers.contract import PRIORITIES, EvaluationResult

logger = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# kombu's Redis transport keeps a queue's messages of priority 3, 6 or 9 in lists of their own.
_KOMBU_PRIORITY_SEP, _KOMBU_PRIORITY_STEPS = "\x06\x16", (3, 6, 9)
EVALUATION_BUCKETS_S = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 4 * 3600)


@dataclass
class _Node:
    """This worker's metrics state: set in the main process, inherited by forked children."""

    directory: Path | None = None
    server: Any = None


_node = _Node()


def enabled() -> bool:
    """True in a worker started with a metrics port (main process and pool children)."""
    return _node.directory is not None


@dataclass(frozen=True)
class _Metrics:
    results: Counter
    evaluation_seconds: Histogram
    running: Gauge
    lost_children: Counter


@cache
def _metrics() -> _Metrics:
    """Created on first use, after ``_prepare`` chose the multiprocess value class."""
    return _Metrics(
        results=Counter("evofleet_results", "Results recorded by this worker, by status and "
                        "priority (first result per candidate only).", ["status", "priority"]),
        evaluation_seconds=Histogram(
            "evofleet_evaluation_seconds", "Seconds from a candidate's start to its result "
            "(a batch evaluator's candidates share the batch's time).",
            buckets=EVALUATION_BUCKETS_S),
        running=Gauge("evofleet_candidates_running", "Candidates in the messages the pool "
                      "children are evaluating now.", multiprocess_mode="livesum"),
        lost_children=Counter("evofleet_lost_children", "Pool children lost while running a "
                              "task: died (killed, crashed, exited) or killed by the hard time "
                              "limit.", ["reason"]),
    )


def count_result(result: EvaluationResult) -> None:
    """Count a result this process recorded first (the ledger's hook)."""
    if not enabled():
        return
    metrics = _metrics()
    metrics.results.labels(result.status.value, result.priority.value).inc()
    if result.started_at is not None and result.finished_at is not None:
        seconds = (result.finished_at - result.started_at).total_seconds()
        metrics.evaluation_seconds.observe(max(0.0, seconds))


@contextmanager
def running(candidates: int) -> Iterator[None]:
    """Count ``candidates`` as running for the block (a pool child's task)."""
    if not enabled():
        yield
        return
    gauge = _metrics().running
    gauge.inc(candidates)
    try:
        yield
    finally:
        gauge.dec(candidates)


def lost_child(pid: int | None, *, hard_timeout: bool) -> None:
    """Count a lost pool child and drop its live gauges (main process, when its task settles)."""
    if not enabled():
        return
    _metrics().lost_children.labels("time_limit" if hard_timeout else "died").inc()
    if pid:
        mark_process_dead(pid, str(_node.directory))


def kombu_queue_lists(queue: str) -> list[str]:
    """The Redis lists that hold one Celery queue's messages."""
    return [queue, *(f"{queue}{_KOMBU_PRIORITY_SEP}{step}" for step in _KOMBU_PRIORITY_STEPS)]


class NodeCollector:
    """What ``/metrics`` serves: every process's counters (from the multiprocess directory),
    after dropping dead children's live gauges, and the queue depth read from Redis now."""

    def __init__(self, directory: Path, broker_url: str) -> None:
        self.directory = directory
        self.files = MultiProcessCollector(None, path=str(directory))
        self.client = redis.Redis.from_url(broker_url, socket_connect_timeout=2, socket_timeout=2)

    def collect(self) -> Iterable[Metric]:
        self._forget_dead_children()
        yield from self.files.collect()
        depth = self._queue_depth()
        if depth is not None:
            yield depth

    def _queue_depth(self) -> GaugeMetricFamily | None:
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for priority in PRIORITIES:
                    for name in kombu_queue_lists(priority):
                        pipe.llen(name)
                lengths = pipe.execute()
        except redis.RedisError as exc:  # the scrape still answers; Redis's absence shows here
            logger.warning("queue depth not read: %s", exc)
            return None
        gauge = GaugeMetricFamily(
            "evofleet_queue_depth", "Messages waiting in each priority's Celery queue (a message "
            "carries up to chunk_size candidates); the same on every worker of a deployment.",
            labels=["priority"])
        per_queue = len(_KOMBU_PRIORITY_STEPS) + 1
        for index, priority in enumerate(PRIORITIES):
            gauge.add_metric([priority], sum(lengths[index * per_queue:(index + 1) * per_queue]))
        return gauge

    def _forget_dead_children(self) -> None:
        """A child killed between tasks never reached ``lost_child``: drop its live gauges."""
        for path in self.directory.glob("gauge_live*_*.db"):
            pid = int(path.stem.rsplit("_", 1)[1])
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                mark_process_dead(pid, str(self.directory))
            except PermissionError:  # alive, someone else's: not ours to judge
                pass


def _remove_stale_directories() -> None:
    """Directories of workers that were killed (SIGKILL skips ``worker_shutdown``)."""
    for stale in Path(tempfile.gettempdir()).glob("evofleet-metrics-*-*"):
        pid = stale.name.split("-")[2]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(stale, ignore_errors=True)
        except PermissionError:  # alive, another user's
            pass


def _prepare(port: int) -> None:
    """Main process, before the pool forks: a fresh multiprocess directory for this worker."""
    _remove_stale_directories()
    directory = Path(tempfile.mkdtemp(prefix=f"evofleet-metrics-{os.getpid()}-"))
    os.environ[MULTIPROC_ENV] = str(directory)
    # prometheus_client picks its value class at import; metrics made from now on use files.
    values.ValueClass = values.get_value_class()
    _node.directory = directory
    logger.info("metrics: pool children write to %s; /metrics on port %d", directory, port)


@worker_init.connect
def _on_worker_init(sender: Any = None, **_: Any) -> None:
    port = int(getattr(sender.app.conf.evofleet_settings, "metrics_port", 0) or 0)
    if port:
        _prepare(port)


@worker_ready.connect
def _serve(sender: Any = None, **_: Any) -> None:
    """Start ``/metrics`` once the pool runs (its first children do not inherit the socket)."""
    if not enabled() or _node.server is not None:
        return
    assert _node.directory is not None
    port = int(sender.app.conf.evofleet_settings.metrics_port)
    registry = CollectorRegistry()
    registry.register(NodeCollector(_node.directory, sender.app.conf.broker_url))
    try:
        _node.server, _thread = start_http_server(port, registry=registry)
    except OSError as exc:  # evaluating matters more than metrics: say so and go on
        logger.error("metrics: cannot serve /metrics on port %d: %s", port, exc)


@worker_process_shutdown.connect
def _child_exits(**_: Any) -> None:
    if enabled():
        mark_process_dead(os.getpid(), str(_node.directory))


@worker_shutdown.connect
def _stop(**_: Any) -> None:
    if _node.server is not None:
        _node.server.shutdown()
        _node.server = None
    if _node.directory is not None:
        shutil.rmtree(_node.directory, ignore_errors=True)
