"""The ledger records the first result per candidate once, however often its task is delivered."""

from __future__ import annotations

import time

import redis

from orchestration.api import launcher_app
from orchestration.local_cluster import LocalWorker
from orchestration.submit import create_generation, group_id_for
from tests.conftest import make_spec
from workers.contract import EvaluationResult, Status
from workers.keys import EVALUATE_TASK, FINALIZE_TASK, GENERATIONS_INDEX
from workers.ledger import Ledger


def result(spec_id: str, candidate_id: str, status: Status) -> EvaluationResult:
    return EvaluationResult(generation_id=spec_id, candidate_id=candidate_id, status=status)


def test_first_result_wins_and_counts_once(redis_client: redis.Redis) -> None:
    spec = make_spec([{"id": "a", "params": {"x": [0.1, 0.2]}}])
    ledger = Ledger(redis_client, spec.id)
    assert ledger.create(spec) == 1

    assert ledger.record(result(spec.id, "a", Status.ok)) is True
    assert ledger.record(result(spec.id, "a", Status.crashed)) is False

    assert ledger.result("a").status is Status.ok  # type: ignore[union-attr]
    assert redis_client.xlen(ledger.keys.stream) == 1
    state = ledger.state()
    assert (state["recorded"], state["n_ok"]) == ("1", "1")
    assert "n_crashed" not in state


def test_results_recorded_together_count_once_each_and_never_in_a_deleted_generation(
    redis_client: redis.Redis,
) -> None:
    spec = make_spec([{"id": c, "params": {"x": [0.1]}} for c in "abc"])
    ledger = Ledger(redis_client, spec.id)
    ledger.create(spec)
    assert ledger.record(result(spec.id, "b", Status.ok)) is True

    flags = ledger.record_many([result(spec.id, "a", Status.ok), result(spec.id, "b", Status.error),
                                result(spec.id, "c", Status.timeout)])
    assert flags == [True, False, True]
    assert [r.candidate_id for r in ledger.stream_results(redis_client.xrange(ledger.keys.stream))] == [
        "b", "a", "c"]
    state = ledger.state()
    assert (state["recorded"], state["n_ok"], state["n_timeout"]) == ("3", "2", "1")
    assert "n_error" not in state
    assert ledger.record_many([]) == []

    redis_client.delete(ledger.keys.state)
    other = make_spec([{"id": "d", "params": {}}]).id
    assert ledger.record_many([result(other, "d", Status.ok)]) == [False]
    assert redis_client.hget(ledger.keys.results, "d") is None


def test_same_task_delivered_twice_is_counted_once(
    redis_url: str, session_worker: LocalWorker, redis_client: redis.Redis
) -> None:
    spec = make_spec([{"id": "only", "params": {"x": [0.3, 0.0, 0.0]}}])
    app = launcher_app(redis_url)
    ledger = Ledger(redis_client, spec.id)
    create_generation(app, ledger, spec)
    body = app.signature(FINALIZE_TASK, args=(spec.id,), queue="critical")
    message = {
        "args": (spec.id, [spec.candidates[0].model_dump(mode="json")], time.time()),
        "task_id": "same-task-id-" + spec.id,
        "queue": "normal",
        "group_id": group_id_for(spec.id),
        "group_index": 0,
        "chord": body,
    }
    app.send_task(EVALUATE_TASK, **message)
    app.send_task(EVALUATE_TASK, **message)

    deadline = time.monotonic() + 30
    while ledger.status() != "complete" and time.monotonic() < deadline:
        time.sleep(0.05)
    # Let the second delivery finish too before counting.
    time.sleep(1.0)
    assert ledger.status() == "complete"
    assert redis_client.hlen(ledger.keys.results) == 1
    assert redis_client.xlen(ledger.keys.stream) == 1
    assert ledger.state()["recorded"] == "1"
    # The two deliveries may run at once on the two pool children; only one result counts.
    assert ledger.attempts(["only"])["only"] in (1, 2)
    summary = ledger.summary()
    assert summary is not None and summary["counts"]["ok"] == 1


def test_rows_recorded_for_the_missing_carry_submission_time_and_the_echo(
    redis_client: redis.Redis,
) -> None:
    spec = make_spec([
        {"id": "a", "params": {"x": [0.1, 0.2]}, "metadata": {"parent": "p1"}},
        {"id": "b", "params": {"x": [0.5, 0.0]}},
    ])
    ledger = Ledger(redis_client, spec.id)
    ledger.create(spec)
    created = float(ledger.state()["created_at"])
    ledger.record(result(spec.id, "b", Status.ok))
    assert ledger.record_missing(Status.cancelled, "generation cancelled") == 1
    row = ledger.result("a")
    assert row is not None and row.status is Status.cancelled
    # Submitted when its generation was, although no chunk of it reached a queue.
    assert row.submitted_at is not None and abs(row.submitted_at.timestamp() - created) < 1e-3
    assert row.params == {"x": [0.1, 0.2]} and row.metadata == {"parent": "p1"}


def test_create_knows_the_header_and_state_a_read_would_return_and_can_take_the_lease(
    redis_client: redis.Redis,
) -> None:
    spec = make_spec([{"id": f"c{i}", "priority": p, "params": {"x": [0.1, 0.0]}}
                      for i, p in enumerate(["high", "normal", "normal", "low"])], deadline=90)
    ledger = Ledger(redis_client, spec.id)
    assert ledger.create(spec, collector="launcher-token", lease_s=5) == 4

    assert ledger.created == ledger.header_and_state()
    assert ledger.created[1]["t_normal"] == "2" and ledger.created[1]["status"] == "running"
    assert ledger.collector() == "launcher-token"
    assert 0 < redis_client.pttl(ledger.keys.collector) <= 5000
    assert not ledger.claim_collector("rival", ttl_s=5)


def test_complete_and_read_ends_once_releases_only_its_own_lease_and_sets_expiry(
    redis_client: redis.Redis,
) -> None:
    spec = make_spec([{"id": "a", "params": {"x": [0.1, 0.2]}}])
    ledger = Ledger(redis_client, spec.id)
    ledger.create(spec, collector="launcher", lease_s=5)
    old = f"old-{spec.id}"
    redis_client.zadd(GENERATIONS_INDEX, {old: time.time() - 7200})  # past the retention

    assert ledger.complete_and_read({"by": "worker"}, 3600, release="someone-else") == (
        "complete", {"by": "worker"})
    assert ledger.collector() == "launcher"  # not the releaser's lease: kept
    # The second completer keeps the first one's summary, and may release its own lease.
    assert ledger.complete_and_read({"by": "launcher"}, 3600, release="launcher") == (
        "complete", {"by": "worker"})
    assert ledger.collector() is None
    assert all(0 < redis_client.ttl(key) <= 3600 for key in ledger.keys.all()
               if redis_client.exists(key))
    assert redis_client.zscore(GENERATIONS_INDEX, old) is None
    assert redis_client.zscore(GENERATIONS_INDEX, spec.id) is not None
    assert Ledger(redis_client, "never-created").complete_and_read({}, 3600) == ("unknown", None)
