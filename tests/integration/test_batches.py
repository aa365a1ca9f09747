"""Results reach the sinks in batches: by size, or by time when a batch does not fill."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from orchestration.local_cluster import LocalWorker
from tests.conftest import make_spec, run_spec
from workers.contract import EvaluationResult


def test_batches_by_size_stream_to_the_file(
    redis_url: str, session_worker: LocalWorker, tmp_path: Path
) -> None:
    out = tmp_path / "results.jsonl"
    seen: list[tuple[int, int]] = []

    def on_batch(batch: Sequence[EvaluationResult]) -> None:
        # The sink has already flushed this batch: the file grows as results arrive.
        seen.append((len(batch), len(out.read_text().splitlines())))

    candidates = [{"id": f"n{i}"} for i in range(30)]
    spec = make_spec(candidates, evaluator="noop", objectives={"y": "max"}, batch_size=7,
                     batch_timeout=5.0)
    run_spec(spec, redis_url, out=out, on_batch=on_batch)

    sizes = [size for size, _ in seen]
    assert sum(sizes) == 30 and max(sizes) <= 7
    assert sizes.count(7) >= 3  # full batches are flushed without waiting for the timeout
    cumulative = 0
    for size, lines in seen:
        cumulative += size
        assert lines == cumulative


def test_partial_batch_is_flushed_after_batch_timeout(
    redis_url: str, session_worker: LocalWorker
) -> None:
    sizes: list[int] = []
    candidates = [{"id": f"s{i}", "params": {"seconds": 0.3}} for i in range(8)]
    spec = make_spec(candidates, evaluator="sleep", objectives={"s": "min"}, batch_size=100,
                     batch_timeout=0.25)
    generation = run_spec(spec, redis_url, on_batch=lambda b: sizes.append(len(b)))

    assert sum(sizes) == 8
    assert len(sizes) >= 3 and max(sizes) < 8  # flushed by time, long before 100 results
    assert generation.stats()["batches"] == len(sizes)
