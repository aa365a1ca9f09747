"""Chunked tasks on a real worker: one result and one ledger entry per candidate, any chunk."""

from __future__ import annotations

import base64
import json
import os
import signal
from datetime import UTC, datetime, timedelta

import pytest
import redis

from orchestration.local_cluster import LocalRedis, LocalWorker
from orchestration.submit import AUTO_PROBE
from tests.conftest import make_spec, run_spec
from workers.contract import Candidate, EvaluationResult, Status
from workers.evaluators import EvaluationContext
from workers.keys import EVALUATE_TASK, FINALIZE_TASK
from workers.ledger import Ledger


def zdt_candidates(n: int) -> list[dict[str, object]]:
    return [{"id": f"c{i}", "params": {"x": [i / n, 0.25, 0.5]}} for i in range(n)]


def test_chunks_of_eight_record_every_candidate_once_through_the_batch_path(
    redis_url: str, session_worker: LocalWorker, redis_client: redis.Redis
) -> None:
    spec = make_spec(zdt_candidates(20), chunk_size=8)
    generation = run_spec(spec, redis_url)

    assert generation.wait(0) == "complete"
    ledger = Ledger(redis_client, spec.id)
    state = ledger.state()
    assert state["chunks"] == "3" and state["submitted"] == "20" and state["recorded"] == "20"
    assert redis_client.hlen(ledger.keys.results) == 20
    assert redis_client.xlen(ledger.keys.stream) == 20
    results = {r.candidate_id: r for r in ledger.iter_results()}
    assert sorted(results) == sorted(f"c{i}" for i in range(20))
    assert {r.status.value for r in results.values()} == {"ok"}
    for i in range(20):
        f1 = results[f"c{i}"].scores["f1"]
        assert abs(f1 - i / 20) < 1e-12
    # evaluate_batch scored each chunk in one call: one start time per chunk (8 + 8 + 4).
    starts = sorted(
        (r.started_at for r in results.values() if r.started_at is not None), key=str
    )
    assert len(starts) == 20 and len(set(starts)) == 3
    summary = ledger.summary()
    assert summary is not None and summary["counts"]["ok"] == 20


def test_a_failing_candidate_in_a_chunk_gets_an_error_for_itself_only(
    redis_url: str, session_worker: LocalWorker, redis_client: redis.Redis
) -> None:
    candidates = zdt_candidates(6)
    candidates[3] = {"id": "c3", "params": {"x": [2.0, 0.5]}}  # outside [0, 1]: raises
    spec = make_spec(candidates, chunk_size=6)
    generation = run_spec(spec, redis_url)

    assert generation.wait(0) == "complete"
    results = {r.candidate_id: r for r in Ledger(redis_client, spec.id).iter_results()}
    assert len(results) == 6
    assert results["c3"].status.value == "error"
    assert results["c3"].error is not None and results["c3"].error.type == "ValueError"
    assert "outside" in results["c3"].error.message
    assert {results[c].status.value for c in results if c != "c3"} == {"ok"}


def test_each_candidate_of_a_chunk_has_its_own_soft_time_limit(
    redis_url: str, session_worker: LocalWorker, redis_client: redis.Redis
) -> None:
    seconds = [0.05, 3.0, 0.05, 0.05]
    candidates = [{"id": f"s{i}", "params": {"seconds": s}} for i, s in enumerate(seconds)]
    spec = make_spec(
        candidates, evaluator="sleep", objectives={"t": "min"}, chunk_size=4,
        soft_time_limit=0.5, time_limit=10,
    )
    generation = run_spec(spec, redis_url)

    assert generation.wait(0) == "complete"
    ledger = Ledger(redis_client, spec.id)
    assert ledger.state()["chunks"] == "1"
    results = {r.candidate_id: r for r in ledger.iter_results()}
    assert results["s1"].status.value == "timeout"
    assert results["s1"].error is not None
    assert results["s1"].error.type == "SoftTimeLimitExceeded"
    assert results["s1"].eval_seconds is not None and results["s1"].eval_seconds < 2.0
    # The candidates after the slow one in the same chunk still ran, each to completion.
    for cid in ("s0", "s2", "s3"):
        assert results[cid].status.value == "ok" and results[cid].scores == {"t": 0.05}


def test_auto_chunks_grow_after_probing_and_keep_one_result_each(
    redis_url: str, session_worker: LocalWorker, redis_client: redis.Redis
) -> None:
    total = 600
    candidates = [
        {"id": f"n{i}", "priority": "high" if i % 3 == 0 else "normal"} for i in range(total)
    ]
    spec = make_spec(candidates, evaluator="noop", objectives={"f": "min"}, chunk_size="auto",
                     batch_size=50)
    generation = run_spec(spec, redis_url)

    assert generation.wait(0) == "complete"
    ledger = Ledger(redis_client, spec.id)
    state = ledger.state()
    assert int(state["recorded"]) == total and int(state["n_ok"]) == total
    assert int(state["s_high"]) == 200 and int(state["s_normal"]) == 400
    assert int(state["chunks"]) < total // 4  # most candidates travelled in chunks
    assert redis_client.hlen(ledger.keys.results) == total
    ids = {r.candidate_id for r in ledger.iter_results()}
    assert ids == {f"n{i}" for i in range(total)}


def test_the_next_auto_generation_of_an_evaluator_starts_from_its_learned_cost(
    redis_url: str, session_worker: LocalWorker, redis_client: redis.Redis
) -> None:
    chunks = []
    for _ in range(2):
        spec = make_spec([{"id": f"c{i}"} for i in range(40)], evaluator="tests.sample_evaluators:quick",
                         objectives={"f": "min"}, chunk_size="auto")
        assert run_spec(spec, redis_url).wait(0) == "complete"
        state = Ledger(redis_client, spec.id).state()
        assert int(state["n_ok"]) == 40
        chunks.append(int(state["chunks"]))
    # The first probes with AUTO_PROBE chunks of one; the second sends its 40 in one or two.
    assert chunks[0] > AUTO_PROBE
    assert chunks[1] <= 2


def test_a_probe_result_is_learned_once(private_redis: LocalRedis) -> None:
    """The probe reads its results back itself and the collector hands them on as well: the
    evaluator's cost is learned from each once. No worker: the test records the results."""
    from orchestration.api import launcher_app
    from orchestration.submit import Submitter, create_generation

    app = launcher_app(private_redis.url)  # a Redis of its own: nothing learned for it yet
    client = redis.Redis.from_url(private_redis.url)
    spec = make_spec([{"id": f"c{i}"} for i in range(20)], evaluator="noop",
                     objectives={"f": "min"}, chunk_size="auto")
    ledger = Ledger(client, spec.id)
    create_generation(app, ledger, spec)
    submitter = Submitter(app, ledger, spec.header())
    assert submitter.submit_more(recorded=0) == AUTO_PROBE  # chunks of one, then it waits

    started = datetime.now(UTC)
    probes = [EvaluationResult(generation_id=spec.id, candidate_id=f"c{i}", status=Status.ok,
                               scores={"f": 0.0}, worker="w", started_at=started + timedelta(seconds=i),
                               finished_at=started + timedelta(seconds=i, milliseconds=10))
              for i in range(AUTO_PROBE)]
    assert all(ledger.record_many(probes))
    assert submitter.submit_more(recorded=AUTO_PROBE) == 20 - AUTO_PROBE  # sized from the probes
    assert submitter.auto.seen == AUTO_PROBE
    submitter.observe(probes)  # the collector's batch: the same results
    assert submitter.auto.seen == AUTO_PROBE
    assert submitter.auto.seconds == pytest.approx(AUTO_PROBE * 0.01)
    client.close()
    app.close()


def test_a_finished_generation_expires_within_the_retention(
    redis_url: str, session_worker: LocalWorker, redis_client: redis.Redis
) -> None:
    spec = make_spec(zdt_candidates(4), chunk_size=2)
    run_spec(spec, redis_url)

    ledger = Ledger(redis_client, spec.id)
    retention = session_worker_retention()
    present = [key for key in ledger.keys.all() if redis_client.exists(key)]
    assert ledger.keys.results in present and ledger.keys.summary in present
    for key in present:
        ttl = redis_client.ttl(key)
        assert 0 < ttl <= retention, (key, ttl)


def session_worker_retention() -> int:
    from workers.settings import WorkerSettings

    return WorkerSettings().retention_s


def test_a_pipelined_message_is_what_send_task_publishes(private_redis: LocalRedis) -> None:
    from orchestration.api import launcher_app
    from orchestration.submit import TaskMessages

    app = launcher_app(private_redis.url)
    client = redis.Redis.from_url(private_redis.url)
    body = app.signature(FINALIZE_TASK, args=("g",), queue="critical")
    args = ["g", [{"id": "c1", "params": {"x": [0.5]}, "priority": "low", "metadata": None}], 1.5]
    app.send_task(EVALUATE_TASK, args=args, task_id="t1", queue="low", group_id="grp",
                  group_index=3, chord=body, time_limit=30.0)
    ours = TaskMessages(app, body, "grp")
    client.lpush(ours.queue_key("low"), ours.build(args, "low", 3, 30.0))
    built, sent = (json.loads(client.rpop("low")) for _ in range(2))  # type: ignore[arg-type]
    client.close()

    for message in (built, sent):
        message["body"] = json.loads(base64.b64decode(message["body"]))
        for volatile in ("id", "root_id", "origin", "argsrepr"):
            message["headers"].pop(volatile)
        for volatile in ("correlation_id", "delivery_tag", "reply_to"):
            message["properties"].pop(volatile)
    assert built == sent


def kill_own_process(candidate: Candidate, context: EvaluationContext) -> dict[str, float]:
    """Test evaluator (named as module:function): SIGKILLs its pool child when params.kill."""
    if candidate.params.get("kill"):
        os.kill(os.getpid(), signal.SIGKILL)
    return {"f": 1.0}


def test_a_child_killed_inside_a_chunk_costs_one_rerun_alone_of_the_unfinished(
    redis_url: str, session_worker: LocalWorker, redis_client: redis.Redis
) -> None:
    candidates = [{"id": f"k{i}", "params": {"kill": i == 2}} for i in range(5)]
    spec = make_spec(
        candidates, evaluator=f"{__name__}:kill_own_process", objectives={"f": "max"},
        chunk_size=5, crash_retries=0,
    )
    generation = run_spec(spec, redis_url, timeout_s=60)

    assert generation.wait(0) == "complete"
    ledger = Ledger(redis_client, spec.id)
    results = {r.candidate_id: r for r in ledger.iter_results()}
    assert sorted(results) == [f"k{i}" for i in range(5)]
    assert results["k2"].status.value == "crashed" and results["k2"].attempts == 1
    assert results["k2"].error is not None and results["k2"].error.signal == "SIGKILL"
    assert {results[c].status.value for c in results if c != "k2"} == {"ok"}
    # k0 and k1 finished inside the chunk; the unfinished three were each re-run alone once.
    assert ledger.attempts(["k0", "k1", "k2", "k3", "k4"]) == {
        "k0": 0, "k1": 0, "k2": 1, "k3": 1, "k4": 1,
    }
    assert ledger.summary() is not None


def test_backpressure_waits_for_room_for_a_whole_chunk(
    redis_url: str, session_worker: LocalWorker, redis_client: redis.Redis
) -> None:
    spec = make_spec(zdt_candidates(40), chunk_size=8, max_in_flight=12)
    generation = run_spec(spec, redis_url)

    assert generation.wait(0) == "complete"
    state = Ledger(redis_client, spec.id).state()
    assert state["recorded"] == "40"
    assert state["chunks"] == "5"  # never a chunk cut short by the in-flight cap
