"""GEPA's optimize through FleetAdapter on a real local cluster (2 pool children)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gepa
import pytest

from orchestration.integrations.executor import FleetExecutor
from orchestration.integrations.gepa import FleetAdapter, FleetFailure, fleet_batch_evaluator
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


def test_optimize_anything_with_the_fleet_batch_evaluator(adapter: FleetAdapter, tmp_path: Any) -> None:
    from gepa.optimize_anything import EngineConfig, GEPAConfig, ReflectionConfig, optimize_anything

    with FleetExecutor(adapter.broker_url, generation_options={"crash_retries": 0}) as executor:
        evaluate_pairs = fleet_batch_evaluator(gepa_task.keyword_score, executor)
        [crashed, scored] = evaluate_pairs([("CRASH", gepa_task.DATASET[0]),
                                            ("alpha", gepa_task.DATASET[0])])
        assert crashed[0] == 0.0 and crashed[1]["status"] == "crashed"
        assert "SIGKILL" in crashed[1]["error"]
        assert scored == (1.0, {"feedback": "ok"})
        result = optimize_anything(
            "Answer the question.", batch_evaluator=evaluate_pairs, dataset=gepa_task.DATASET,
            config=GEPAConfig(
                engine=EngineConfig(max_metric_calls=60, seed=0, run_dir=str(tmp_path / "oa")),
                reflection=ReflectionConfig(reflection_lm=gepa_task.reflection_lm(first="CRASH"),
                                            reflection_minibatch_size=3),
            ),
        )
        launched = len(executor.generation_ids)
    assert result.val_aggregate_scores[result.best_idx] > result.val_aggregate_scores[0]
    assert "CRASH" not in str(result.candidates[result.best_idx])
    assert launched >= 3
