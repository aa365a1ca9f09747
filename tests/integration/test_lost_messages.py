"""Candidates whose task message a Redis outage lost are found (real messages, real Redis)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from orchestration import recovery
from orchestration.api import launcher_app
from orchestration.generation import Generation
from orchestration.local_cluster import LocalRedis
from orchestration.recovery import LostMessageWatch, carried_candidates, missing_candidates
from orchestration.submit import Submitter, create_generation
from tests.conftest import make_spec
from workers import redis_client
from workers.contract import PRIORITIES, EvaluationResult, Status
from workers.ledger import Ledger


@pytest.fixture
def client(private_redis: LocalRedis) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(private_redis.url)
    yield client
    client.close()


def published(private_redis: LocalRedis, client: redis.Redis, rows: int, **fields: object) -> Submitter:
    """A generation of ``rows`` candidates (chunks of 2, priorities mixed), every chunk queued."""
    spec = make_spec([{"id": f"c{i}", "priority": PRIORITIES[i % 2]} for i in range(rows)],
                     evaluator="noop", objectives={"y": "min"}, chunk_size=2, **fields)
    app = launcher_app(private_redis.url)
    ledger = Ledger(client, spec.id)
    create_generation(app, ledger, spec)
    submitter = Submitter(app, ledger, spec.header())
    submitter.submit_more(recorded=0)
    return submitter


def candidate_ids(raw: bytes) -> list[str]:
    args = json.loads(base64.b64decode(json.loads(raw)["body"]))[0]
    return [c["id"] for c in args[1]]


def test_a_popped_message_missing_from_unacked_is_found_and_republished(
    private_redis: LocalRedis, client: redis.Redis
) -> None:
    submitter = published(private_redis, client, 12, max_in_flight=8)
    ledger = submitter.ledger
    messages = submitter.messages
    queued = carried_candidates(client, messages, ledger.generation_id)
    assert queued == {"c0", "c2", "c4", "c6", "c8", "c10", "c1", "c3"}  # critical first
    critical = messages.queue_key("critical")
    # A worker's delivery as kombu records it: popped, then [message, exchange, routing_key].
    delivered = client.rpop(critical)
    client.hset(messages.unacked_key, "tag-1", json.dumps([json.loads(delivered), "", "critical"]))
    # The lost pop: the next message is in no queue and not in unacked.
    lost = client.rpop(critical)
    # Another popped message whose candidates were recorded (acknowledged since): not missing.
    done = client.rpop(messages.queue_key("high"))
    for candidate_id in candidate_ids(done):
        ledger.record(EvaluationResult(generation_id=ledger.generation_id,
                                       candidate_id=candidate_id, status=Status.ok))
    # Another generation's message and a foreign value are ignored.
    other = published(private_redis, client, 2, max_in_flight=2)
    client.lpush(critical, "not a task message")

    carried = carried_candidates(client, messages, ledger.generation_id)
    assert carried == queued - set(candidate_ids(lost)) - set(candidate_ids(done))
    missing = missing_candidates(ledger, client, messages)
    assert sorted(c.id for c in missing) == sorted(candidate_ids(lost))
    assert missing_candidates(other.ledger, client, messages) == []

    assert recovery.republish(submitter, missing) == 1
    again = client.lindex(critical, -1)  # the next one taken
    assert candidate_ids(again) == candidate_ids(lost)
    message = json.loads(again)
    _args, _kwargs, embed = json.loads(base64.b64decode(message["body"]))
    # No chord part: the chord's count stays as it was.
    assert embed["chord"] is None
    assert message["headers"]["group"] is None and message["headers"]["group_index"] is None
    assert missing_candidates(ledger, client, messages) == []


def test_the_watch_republishes_only_what_is_missing_twice_after_an_outage(
    private_redis: LocalRedis, client: redis.Redis
) -> None:
    submitter = published(private_redis, client, 4, max_in_flight=4)
    watch = LostMessageWatch(submitter.ledger, submitter)
    queue = submitter.messages.queue_key("critical")
    lost = client.rpop(queue)
    assert watch.poll(1000.0) == 0  # no outage seen: no check at all
    assert watch.suspects == set()

    watch.outage_ended(1000.0)
    assert watch.poll(1000.0 + recovery.QUIET_S / 2) == 0  # quiet: workers reconnecting
    assert watch.suspects == set()
    now = 1000.0 + recovery.QUIET_S
    assert watch.poll(now) == 0  # missing once: a suspect, maybe mid-delivery
    assert watch.suspects == set(candidate_ids(lost))
    assert watch.poll(now + 0.1) == 0  # not before the recheck delay
    assert watch.poll(now + recovery.RECHECK_S) == len(candidate_ids(lost))
    assert watch.suspects == set()
    assert client.llen(queue) == 1

    # A suspect that turns up (its delivery recorded meanwhile) is not republished.
    brief = client.rpop(queue)
    now += 100.0
    assert watch.poll(now) == 0 and watch.suspects == set(candidate_ids(brief))
    client.hset(submitter.messages.unacked_key, "tag", json.dumps([json.loads(brief), "", "critical"]))
    assert watch.poll(now + recovery.RECHECK_S) == 0
    assert watch.suspects == set() and client.llen(queue) == 0


def test_a_restart_hidden_by_the_client_retries_is_seen_by_its_run_id(tmp_path: Path) -> None:
    server = LocalRedis(workdir=tmp_path, appendonly=True).start()
    client = redis_client.connect(server.url)  # retries through a short restart, as the launcher's
    try:
        submitter = published(server, client, 2, max_in_flight=2)
        watch = LostMessageWatch(submitter.ledger, submitter)
        assert watch.poll(1000.0) == 0 and watch.next_check is None  # run_id noted, nothing armed
        server.stop(remove=False)
        server = LocalRedis(port=server.port, workdir=tmp_path, appendonly=True).start()
        assert watch.poll(1000.0 + recovery.RESTART_CHECK_S / 2) == 0  # not compared yet
        assert watch.next_check is None
        now = 1000.0 + recovery.RESTART_CHECK_S
        assert watch.poll(now) == 0
        assert watch.next_check == now + recovery.QUIET_S
    finally:
        client.close()
        server.stop()


def test_generations_collected_through_one_client_share_one_restart_check(
    private_redis: LocalRedis, client: redis.Redis
) -> None:
    def info_calls() -> int:
        """INFO commands run before this one (each read adds one to the next)."""
        return int(client.info("commandstats").get("cmdstat_info", {}).get("calls", 0))

    first, second = (published(private_redis, client, 2) for _ in range(2))
    watches = [LostMessageWatch(s.ledger, s) for s in (first, second)]
    before = info_calls()
    for watch in watches:
        assert watch.poll(1000.0) == 0
    for watch in watches:
        assert watch.poll(1000.0 + recovery.RESTART_CHECK_S / 2) == 0
    assert info_calls() - before == 1 + 1  # one check for both, and the read of `before`
    for watch in watches:
        assert watch.poll(1000.0 + recovery.RESTART_CHECK_S) == 0
    assert info_calls() - before == 2 + 2  # one more check, and one more read
    assert all(watch.next_check is None for watch in watches)  # same run_id: nothing armed


def test_only_a_resumed_collector_checks_without_an_outage(
    private_redis: LocalRedis, client: redis.Redis
) -> None:
    app = launcher_app(private_redis.url)
    resumed = published(private_redis, client, 4, max_in_flight=2)  # its launcher published
    assert Generation(app, client, resumed.generation_id).lost_watch.next_check is not None
    fresh = make_spec([{"id": "a"}], evaluator="noop", objectives={"y": "min"})
    create_generation(app, Ledger(client, fresh.id), fresh)
    assert Generation(app, client, fresh.id).lost_watch.next_check is None  # a launch
