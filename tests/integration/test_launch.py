"""A generation end to end against a real redis-server and a real celery worker."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import redis

from orchestration.api import launch
from orchestration.local_cluster import LocalWorker
from orchestration.settings import LaunchSettings
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


def test_local_worker_imports_evaluators_from_the_launch_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `evofleet launch` in a project directory with ./<module>.py: local workers import it too.
    module = f"evofleet_local_{uuid.uuid4().hex}"
    (tmp_path / f"{module}.py").write_text(
        "import os\n\ndef evaluate(candidate, context):\n    return {'y': float(len(os.getcwd()))}\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # the launcher's side, as the console script does
    spec = make_spec([{"id": "a"}, {"id": "b"}], evaluator=f"{module}:evaluate",
                     objectives={"y": "max"})
    settings = LaunchSettings(broker_url=None, local_workers=1, local_concurrency=1)
    out = tmp_path / "results.jsonl"
    generation = launch(spec, settings=settings, out=out)

    assert generation.wait(60) == "complete"  # the local cluster is gone: read the output file
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["status"] for row in rows] == ["ok", "ok"], rows
    assert {row["scores"]["y"] for row in rows} == {float(len(str(tmp_path)))}  # ran in tmp_path
