"""JSON only: a pickled message published to a queue is refused by the worker, never executed."""

from __future__ import annotations

import time
from pathlib import Path

import redis
from celery import Celery

from orchestration.api import launcher_app
from orchestration.local_cluster import LocalWorker
from orchestration.submit import create_generation
from tests.conftest import make_spec
from workers.keys import EVALUATE_TASK
from workers.ledger import Ledger


def test_pickled_message_is_refused_and_not_executed(
    redis_url: str, session_worker: LocalWorker, redis_client: redis.Redis
) -> None:
    spec = make_spec([
        {"id": "pickled", "params": {"x": [0.1, 0.0]}},
        {"id": "json", "params": {"x": [0.2, 0.0]}},
    ])
    ledger = Ledger(redis_client, spec.id)
    create_generation(launcher_app(redis_url), ledger, spec)
    pickled, plain = (c.model_dump(mode="json") for c in spec.candidates)

    attacker = Celery("attacker", broker=redis_url)
    attacker.conf.update(task_serializer="pickle", accept_content=["pickle", "json"],
                         broker_transport_options={"queue_order_strategy": "priority"})
    attacker.send_task(EVALUATE_TASK, args=(spec.id, [pickled], time.time()),
                       queue="normal", serializer="pickle")
    # A JSON task queued behind it on the same queue: once it has run, the pickled one was seen.
    launcher_app(redis_url).send_task(EVALUATE_TASK, args=(spec.id, [plain], time.time()),
                                      queue="normal")

    deadline = time.monotonic() + 30
    while ledger.result("json") is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ledger.result("json") is not None
    assert ledger.result("pickled") is None
    assert ledger.attempts(["pickled"]) == {"pickled": 0}
    assert redis_client.llen("normal") == 0  # refused and dropped, not left to be retried
    assert session_worker.log_path is not None
    log = Path(session_worker.log_path).read_text()
    assert "Refusing to deserialize untrusted content of type pickle" in log
