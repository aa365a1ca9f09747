"""Chunk sizing under ``chunk_size=auto``."""

from __future__ import annotations

from orchestration.submit import AUTO_MAX_CHUNK, AUTO_PROBE, AutoChunk


def test_auto_probes_with_chunks_of_one() -> None:
    auto = AutoChunk()
    assert auto.size(10_000) == 1
    for _ in range(AUTO_PROBE - 1):
        auto.observe(0.001)
    auto.observe(None)  # a result without timings is not counted
    assert auto.size(10_000) == 1


def test_auto_aims_at_a_second_of_work_per_message() -> None:
    auto = AutoChunk()
    for _ in range(AUTO_PROBE):
        auto.observe(0.01)
    assert auto.size(10_000) == 100  # 1 s / 0.01 s
    tenth = AutoChunk()
    for _ in range(AUTO_PROBE):
        tenth.observe(0.2)
    assert tenth.size(200) == 5


def test_auto_caps_and_leaves_work_for_every_worker() -> None:
    fast = AutoChunk()
    for _ in range(AUTO_PROBE):
        fast.observe(0.0)
    assert fast.size(1_000_000) == AUTO_MAX_CHUNK
    assert fast.size(2_000) == 250  # no more than an eighth of what remains
    # ... unless that leaves a message too little work to be worth its own cost (~25 ms)
    assert fast.size(80) == 50
    assert fast.size(3) == 3
    medium = AutoChunk()
    for _ in range(AUTO_PROBE):
        medium.observe(0.01)
    assert medium.size(80) == 10  # 10 ms each: an eighth is already worth a message


def test_auto_keeps_one_for_evaluations_of_a_second_or_more() -> None:
    slow = AutoChunk()
    for _ in range(AUTO_PROBE):
        slow.observe(1.5)
    assert slow.size(10_000) == 1
