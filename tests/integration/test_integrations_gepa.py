"""GEPA's optimize through FleetAdapter on a real local cluster (2 pool children)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gepa
import pytest

from orchestration.integrations.gepa import FleetAdapter, FleetFailure
from tests import gepa_task

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def adapter() -> Iterator[FleetAdapter]:
    with FleetAdapter("tests.gepa_task:adapter", workers=1, concurrency=2,
                      generation_options={"crash_retries": 0}) as fleet_adapter:
        yield fleet_adapter


def test_gepa_optimize_finishes_although_a_candidate_crashes_its_worker(
    adapter: FleetAdapter, tmp_path: Any
) -> None:
    result = gepa.optimize(
        seed_candidate={"instruction": "Answer the question."},
        trainset=gepa_task.DATASET, valset=gepa_task.DATASET, adapter=adapter,
        reflection_lm=gepa_task.reflection_lm(first="CRASH"), reflection_minibatch_size=3,
        max_metric_calls=60, seed=0, run_dir=str(tmp_path / "run"),
    )
    assert adapter.failures["crashed"] >= 1  # the first proposal killed its workers
    best = result.candidates[result.best_idx]
    assert "CRASH" not in best["instruction"]
    assert result.val_aggregate_scores[result.best_idx] > result.val_aggregate_scores[0] == 0.0
    assert len(adapter.generation_ids) >= 3


def test_a_failing_example_scores_the_failure_score_and_feeds_back_its_error(
    adapter: FleetAdapter,
) -> None:
    examples = [{"question": "q0", "keyword": "alpha"},
                {"question": "q1", "keyword": "beta", "explode": True}]
    [ran, crashed] = adapter.batch_evaluate(
        [({"instruction": "alpha"}, examples), ({"instruction": "CRASH"}, examples[:1])]
    )
    assert ran.scores == [1.0, 0.0] and crashed.scores == [0.0]
    assert ran.trajectories is not None and crashed.trajectories is not None
    assert ran.trajectories[0] == {"question": "q0", "feedback": "ok"}
    failure = ran.trajectories[1]
    assert isinstance(failure, FleetFailure) and failure.status == "error"
    assert "ValueError: example q1 explodes" in failure.error
    assert isinstance(crashed.outputs[0], FleetFailure) and crashed.outputs[0].status == "crashed"
    dataset = adapter.make_reflective_dataset({"instruction": "alpha"}, ran, ["instruction"])
    assert [record["Feedback"] for record in dataset["instruction"]] == [
        "ok", failure.feedback,
    ]
    plain = adapter.evaluate(examples[:1], {"instruction": "no"}, capture_traces=False)
    assert plain.scores == [0.0] and plain.trajectories is None
