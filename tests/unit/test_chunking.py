"""Chunk sizing under ``chunk_size=auto`` and the submission order of candidates."""

from __future__ import annotations

from orchestration.submit import AUTO_MAX_CHUNK, AUTO_PROBE, AutoChunk, planned_order
from workers.contract import Candidate


def test_auto_probes_with_chunks_of_one() -> None:
    auto = AutoChunk()
    assert auto.size(10_000) == 1
    for _ in range(AUTO_PROBE - 1):
        auto.observe(0.001)
    auto.observe(None)  # a result without timings is not counted
    assert auto.size(10_000) == 1


def test_auto_aims_at_a_fifth_of_a_second_per_message() -> None:
    auto = AutoChunk()
    for _ in range(AUTO_PROBE):
        auto.observe(0.01)
    assert auto.size(10_000) == 20  # 0.2 s / 0.01 s


def test_auto_caps_and_leaves_work_for_every_worker() -> None:
    fast = AutoChunk()
    for _ in range(AUTO_PROBE):
        fast.observe(0.0)
    assert fast.size(1_000_000) == AUTO_MAX_CHUNK
    assert fast.size(80) == 10  # no more than an eighth of what remains
    assert fast.size(3) == 1


def test_auto_keeps_one_for_evaluations_of_a_second_or_more() -> None:
    slow = AutoChunk()
    for _ in range(AUTO_PROBE):
        slow.observe(1.5)
    assert slow.size(10_000) == 1


def test_planned_order_is_by_priority_then_spec_order() -> None:
    spec_order = [
        ("a", "low"), ("b", "critical"), ("c", "normal"), ("d", "critical"), ("e", "high"),
    ]
    ordered = planned_order([Candidate.model_validate({"id": i, "priority": p})
                             for i, p in spec_order])
    assert [c.id for c in ordered] == ["b", "d", "e", "c", "a"]
