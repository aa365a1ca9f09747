"""A bench-only Celery app with one no-op task, configured like evofleet's workers.

Start its worker with ``celery -A bench.celery_noop worker -Q bench`` and ``EVOFLEET_BROKER_URL``
set; it shares evofleet's delivery settings (late ack, prefetch 1, JSON) so the comparison is fair.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Queue  # type: ignore[attr-defined]

from workers.celery_app import celery_config
from workers.settings import WorkerSettings

BENCH_QUEUE = "bench"


def make_bench_app(settings: WorkerSettings | None = None) -> Celery:
    """The no-op app on the same Redis and with the same settings as an evofleet worker."""
    config = celery_config(settings or WorkerSettings())
    config.update(task_queues=[Queue(BENCH_QUEUE)],  # type: ignore[no-untyped-call]
                  task_default_queue=BENCH_QUEUE)
    bench = Celery("bench")
    bench.config_from_object(config)
    return bench


app = make_bench_app()


@app.task(name="bench.noop")  # type: ignore[untyped-decorator]
def noop(*args: Any) -> int:
    """Does nothing; returns 0 (a small result, like evofleet's header records)."""
    return 0


@app.task(name="bench.done")  # type: ignore[untyped-decorator]
def done(results: list[Any]) -> int:
    """Chord body: counts the header results."""
    return len(results)
