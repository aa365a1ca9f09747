"""Evaluators that return outputs and feedback: the results file and Generation.results()
carry them exactly, for single and batch evaluation, and failed candidates keep theirs."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from orchestration.local_cluster import LocalWorker
from tests.artifact_evaluators import gepa_like
from tests.conftest import make_spec, run_spec
from workers.contract import Candidate
from workers.evaluators import EvaluationContext

EXAMPLES = [["abc", "level", "xy"], ["noon", "a"], ["racecar", "zz", "q", "pq"]]


def _candidates() -> list[dict[str, object]]:
    return [
        {"id": f"p{index}", "params": {"prompt": f"Answer like #{index}", "examples": examples}}
        for index, examples in enumerate(EXAMPLES)
    ]


def _expected(candidate: dict[str, object]) -> dict[str, object]:
    return gepa_like(Candidate.model_validate(candidate),
                     EvaluationContext(device="cpu", generation_id="x", objectives={}, worker="w"))


@pytest.mark.slow
@pytest.mark.parametrize(("evaluator", "chunk_size", "suffix"), [
    ("tests.artifact_evaluators:gepa_like", 1, ""),
    ("tests.artifact_evaluators:batch_gepa", 3, " (batch)"),
])
def test_gepa_like_outputs_round_trip(
    redis_url: str, session_worker: LocalWorker, tmp_path: Path,
    evaluator: str, chunk_size: int, suffix: str,
) -> None:
    spec = make_spec(_candidates(), evaluator=evaluator, objectives={"accuracy": "max"},
                     chunk_size=chunk_size)
    out = tmp_path / "results.jsonl"
    generation = run_spec(spec, redis_url, out=out)

    from_file = {row["candidate_id"]: row for row in map(json.loads, out.read_text().splitlines())}
    from_api = {r.candidate_id: r for r in generation.results()}
    assert set(from_file) == set(from_api) == {"p0", "p1", "p2"}
    for candidate in _candidates():
        expected = _expected(candidate)
        row, result = from_file[str(candidate["id"])], from_api[str(candidate["id"])]
        assert result.status.value == row["status"] == "ok"
        assert result.scores == row["scores"] == expected["scores"]
        assert result.outputs == row["outputs"] == expected["outputs"]
        assert result.feedback == row["feedback"] == f"{expected['feedback']}{suffix}"
        assert result.artifacts == {} and row["artifacts"] == {}
    summary = generation.summary()
    assert summary is not None and "per_example" not in json.dumps(summary)  # never embedded


@pytest.mark.slow
def test_failed_candidates_keep_what_they_attached(
    redis_url: str, session_worker: LocalWorker, tmp_path: Path,
) -> None:
    candidates = [
        {"id": "raised", "params": {"mode": "raise"}},
        {"id": "plain", "params": {"mode": "plain"}},
        {"id": "slow", "params": {"mode": "sleep"}},
    ]
    spec = make_spec(candidates, evaluator="tests.artifact_evaluators:raises_with_outputs",
                     objectives={"f": "min"}, soft_time_limit=1.5, time_limit=20,
                     artifact_store=str(tmp_path / "store"))
    results = {r.candidate_id: r for r in run_spec(spec, redis_url).results()}

    raised = results["raised"]
    assert raised.status.value == "error" and raised.error is not None
    assert (raised.error.type, raised.error.message) == ("EvaluationError", "step 2 diverged")
    assert raised.outputs == {"trace": ["started", "step 1", "step 2"]}  # the exception's
    assert raised.feedback == "got as far as step 1"  # attached to the context before
    assert set(raised.artifacts) == {"log.txt"}
    plain = results["plain"]
    assert plain.status.value == "error" and plain.outputs == {"partial": [1, 2]}
    slow = results["slow"]
    assert slow.status.value == "timeout" and slow.error is not None
    assert slow.outputs == {"trace": ["started", "step 1"]}
    assert slow.feedback == "got as far as step 1"


@pytest.mark.slow
def test_local_mode_writes_artifacts_beside_the_results_file(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "evaluator: tests.artifact_evaluators:one_tensor\n"
        "objectives: {f: max}\n"
        "candidates: [{id: a, params: {mb: 0.01}}, {id: b, params: {mb: 0.01}}]\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVOFLEET_")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    env["COLUMNS"] = "400"  # one line per message
    done = subprocess.run(
        [sys.executable, "-m", "orchestration.console", "launch", str(spec), "--out",
         str(tmp_path / "run.parquet"), "--quiet", "--concurrency", "1"],
        capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "run.artifacts"
    assert f"artifacts of 2 candidate(s): {folder.as_uri()}" in done.stderr
    rows = pq.read_table(tmp_path / "run.parquet").to_pylist()
    for row in rows:  # the Parquet file's references point into that folder
        ref = json.loads(row["artifacts"])["weights"]
        stored = Path(ref["uri"].removeprefix("file://"))
        assert stored.is_relative_to(folder) and stored.stat().st_size == ref["size"]
        assert hashlib.sha256(stored.read_bytes()).hexdigest() == ref["sha256"]
