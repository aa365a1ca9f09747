"""A generation end to end against a real redis-server and a real celery worker."""

from __future__ import annotations

import json
from pathlib import Path

import redis

from orchestration.local_cluster import LocalWorker
from tests.conftest import make_spec, run_spec
from workers.ledger import Ledger


def test_generation_completes_with_one_result_per_candidate(
    redis_url: str, session_worker: LocalWorker, redis_client: redis.Redis, tmp_path: Path
) -> None:
    candidates = [
        {"id": f"c{i}", "priority": p, "params": {"x": [i / 20, 0.5, 0.5]}}
        for i, p in enumerate(["low", "normal", "high", "critical"] * 5)
    ]
    spec = make_spec(candidates)
    out = tmp_path / "results.jsonl"
    batches: list[int] = []
    generation = run_spec(spec, redis_url, out=out, on_batch=lambda b: batches.append(len(b)))

    assert generation.wait(0) == "complete"
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["candidate_id"] for r in rows) == sorted(c["id"] for c in candidates)
    assert {r["status"] for r in rows} == {"ok"}
    for row in rows:
        for key in ("generation_id", "scores", "error", "attempts", "worker", "device",
                    "submitted_at", "started_at", "finished_at"):
            assert key in row
        assert row["worker"] == "session@127.0.0.1"
        assert row["device"] == "cpu"
    assert sum(batches) == 20 and max(batches) <= spec.batch_size
    # The chord body ran on the worker side: state and summary are in Redis.
    ledger = Ledger(redis_client, spec.id)
    assert ledger.status() == "complete"
    summary = ledger.summary()
    assert summary is not None and summary["counts"]["ok"] == 20
