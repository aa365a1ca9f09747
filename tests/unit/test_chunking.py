"""Chunk sizing under ``chunk_size=auto``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count

from orchestration.submit import AUTO_MAX_CHUNK, AUTO_PROBE, LEARNED_EVALUATORS, AutoChunk, LearnedCost
from workers.contract import EvaluationResult, Status

_starts = count()


def timed(seconds: float | None, *, n: int = 1, worker: str = "w1") -> list[EvaluationResult]:
    """``n`` results of one evaluator call that took ``seconds`` (n > 1: a batch call)."""
    started = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=next(_starts))
    finished = None if seconds is None else started + timedelta(seconds=seconds)
    return [EvaluationResult(generation_id="g", candidate_id=f"c{i}", status=Status.ok, worker=worker,
                             started_at=started, finished_at=finished) for i in range(n)]


def learned(seconds: float, calls: int = AUTO_PROBE) -> AutoChunk:
    auto = AutoChunk()
    for _ in range(calls):
        auto.observe(timed(seconds))
    return auto


def test_auto_probes_with_chunks_of_one() -> None:
    auto = learned(0.001, AUTO_PROBE - 1)
    auto.observe(timed(None))  # a result without timings is not counted
    assert auto.size(10_000) == 1
    assert AutoChunk().size(10_000) == 1


def test_auto_aims_at_a_second_of_work_per_message() -> None:
    assert learned(0.01).size(10_000) == 100  # 1 s / 0.01 s
    assert learned(0.2).size(200) == 5


def test_a_batch_calls_time_is_split_among_its_candidates() -> None:
    auto = AutoChunk()
    auto.observe(timed(0.4, n=40) + timed(0.4, n=40, worker="w2"))  # two calls, 10 ms a candidate
    assert (auto.seen, round(auto.seconds, 6)) == (80, 0.8)
    assert auto.size(10_000) == 100


def test_auto_caps_and_leaves_work_for_every_worker() -> None:
    fast = learned(0.0)
    assert fast.size(1_000_000) == AUTO_MAX_CHUNK
    assert fast.size(2_000) == 250  # no more than an eighth of what remains
    # ... unless that leaves a message too little work to be worth its own cost (~25 ms)
    assert fast.size(80) == 50
    assert fast.size(3) == 3
    assert fast.size(60) == 60  # a tail of 10 after 50 would be a message of its own: kept with it
    assert fast.size(75) == 50  # half a message or more is worth one
    assert learned(0.01).size(80) == 10  # 10 ms each: an eighth is already worth a message


def test_auto_keeps_one_for_evaluations_of_a_second_or_more() -> None:
    assert learned(1.5).size(10_000) == 1


def test_a_learned_cost_starts_the_next_generation_and_is_outweighed_by_its_results() -> None:
    memory = LearnedCost()
    key = ("redis://h:6379/0", "zdt1")
    assert memory.start(key).probing
    memory.remember(key, learned(0.001, AUTO_PROBE - 1))  # still probing: nothing learned
    assert memory.start(key).probing
    memory.remember(key, learned(0.01))
    auto = memory.start(key)
    assert not auto.probing and auto.size(10_000) == 100
    assert memory.start(("redis://other:6379/0", "zdt1")).probing  # per deployment
    for _ in range(4 * AUTO_PROBE):
        auto.observe(timed(0.1))
    assert 0.08 < auto.seconds / auto.seen < 0.1


def test_learned_costs_are_bounded() -> None:
    memory = LearnedCost()
    for i in range(LEARNED_EVALUATORS + 1):
        memory.remember(("u", f"e{i}"), learned(0.01))
    assert memory.start(("u", "e0")).probing
    assert not memory.start(("u", f"e{LEARNED_EVALUATORS}")).probing
