"""Failures inside an evaluation become results; no evaluate task ends in an exception."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import redis

from orchestration.local_cluster import LocalWorker
from tests.conftest import make_spec, run_spec
from workers.ledger import Ledger

EVALUATOR = "tests.sample_evaluators:by_params"


def test_exception_and_soft_time_limit_become_results(
    redis_url: str, session_worker: LocalWorker, redis_client: redis.Redis
) -> None:
    candidates = [
        {"id": "fine", "params": {"value": 2.5}},
        {"id": "raises", "params": {"raise": "bad hyper-parameters"}},
        {"id": "slow", "params": {"sleep": 30}},
        {"id": "no-score", "params": {"omit": True}},
        {"id": "nan-score", "params": {"value": "nan"}},  # a diverged training run
        {"id": "inf-score", "params": {"value": "-inf"}},
        {"id": "fine-after", "params": {"value": 1.0}},
    ]
    spec = make_spec(candidates, evaluator=EVALUATOR, objectives={"y": "max"},
                     soft_time_limit=1.0, time_limit=10.0)
    generation = run_spec(spec, redis_url, timeout_s=60)

    assert generation.wait(0) == "complete"  # the chord body ran: no header task failed
    results = {r.candidate_id: r for r in generation.results()}
    assert results["fine"].status.value == "ok" and results["fine"].scores == {"y": 2.5}
    raised = results["raises"]
    assert raised.status.value == "error"
    assert raised.error is not None
    assert (raised.error.type, raised.error.message) == ("ValueError", "bad hyper-parameters")
    # The evaluator's traceback is kept, in the result and in the worker's log.
    assert raised.error.traceback is not None and "in by_params" in raised.error.traceback
    assert raised.error.traceback.rstrip().endswith("ValueError: bad hyper-parameters")
    assert session_worker.log_path is not None
    assert "in by_params" in session_worker.log_path.read_text(errors="replace")
    slow = results["slow"]
    assert slow.status.value == "timeout" and slow.error is not None
    assert slow.error.type == "SoftTimeLimitExceeded"
    assert slow.error.message == "soft time limit (1s) exceeded"
    # Every result echoes its candidate's params, whatever its status.
    assert all(results[c["id"]].params == c["params"] for c in candidates)
    assert slow.eval_seconds is not None and 0.9 < slow.eval_seconds < 5
    missing = results["no-score"]
    assert missing.status.value == "error" and missing.error is not None
    assert "no score for objective(s) ['y']" in missing.error.message
    for name in ("nan-score", "inf-score"):  # JSON has no NaN: a null score would be unreadable
        error = results[name].error
        assert results[name].status.value == "error" and error is not None
        assert "score(s) not finite" in error.message and results[name].scores == {}
    assert "{'y': nan}" in results["nan-score"].error.message  # type: ignore[union-attr]
    assert results["fine-after"].status.value == "ok"

    summary = Ledger(redis_client, spec.id).summary()
    assert summary is not None
    assert summary["counts"] == {"ok": 2, "error": 4, "timeout": 1, "crashed": 0, "cancelled": 0}
    assert summary["failed"] == {"error": ["inf-score", "nan-score", "no-score", "raises"],
                                 "timeout": ["slow"]}


def test_evaluator_the_worker_cannot_import_is_an_error_per_candidate(
    redis_url: str, session_worker: LocalWorker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The launcher (this process) imports it from tmp_path; the worker, started before, cannot.
    module = f"evofleet_launcher_only_{uuid.uuid4().hex}"
    (tmp_path / f"{module}.py").write_text("def evaluate(candidate, context):\n    return 1.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    candidates = [{"id": f"c{i}", "priority": p} for i, p in enumerate(["normal", "normal", "high"])]
    spec = make_spec(candidates, evaluator=f"{module}:evaluate", objectives={"y": "max"})
    generation = run_spec(spec, redis_url, timeout_s=60)

    assert generation.wait(0) == "complete"  # no hang until the deadline
    expected = (
        f"evaluator '{module}:evaluate' cannot be loaded on worker {session_worker.hostname}: "
        f"module '{module}' does not import (ModuleNotFoundError: No module named '{module}')"
    )
    results = generation.results()
    assert sorted(r.candidate_id for r in results) == ["c0", "c1", "c2"]
    for result in results:
        assert result.status.value == "error" and result.error is not None
        assert (result.error.type, result.error.message) == ("UnknownEvaluator", expected)
        assert result.attempts == 1 and result.worker == session_worker.hostname
