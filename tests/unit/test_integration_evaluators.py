"""The worker-side evaluators behind the integrations (``call``, ``gepa``) and their options."""

from __future__ import annotations

import pytest

from orchestration.integrations.executor import FleetExecutor
from orchestration.integrations.fleet import spec_fields
from workers.contract import Candidate
from workers.evaluators import EvaluationContext, resolve
from workers.evaluators.call import call
from workers.evaluators.gepa_adapter import gepa_evaluate


def context(objective: str) -> EvaluationContext:
    return EvaluationContext(device="cpu", generation_id="g", objectives={objective: "min"}, worker="w")


def test_call_returns_the_value_as_outputs_and_a_number_as_the_score() -> None:
    assert resolve("call") is call
    number = call(Candidate(id="a", params={"fn": "tests.integration_functions:add",
                                            "args": [1], "kwargs": {"b": 2}}), context("value"))
    assert (number.outputs, number.scores) == (3, {"value": 3.0})
    record = call(Candidate(id="b", params={"fn": "tests.integration_functions:describe",
                                            "args": [[1, 2]]}), context("value"))
    assert record.outputs == {"label": "", "n": 2, "total": 3} and record.scores == {"value": 0.0}
    with pytest.raises(TypeError, match="the return value is a set"):
        call(Candidate(id="c", params={"fn": "tests.integration_functions:not_json"}), context("value"))


def test_gepa_evaluator_returns_the_evaluation_batch_as_json() -> None:
    params = {"adapter": "tests.gepa_task:adapter", "candidate": {"instruction": "alpha beta"},
              "batch": [{"question": "q0", "keyword": "alpha"}, {"question": "q2", "keyword": "gamma"}],
              "capture_traces": True}
    evaluation = gepa_evaluate(Candidate(id="p", params=params), context("score"))
    assert evaluation.scores == {"score": 0.5}
    assert evaluation.outputs["scores"] == [1.0, 0.0]
    assert evaluation.outputs["trajectories"][1]["feedback"] == "missing keyword: gamma"
    untraced = gepa_evaluate(Candidate(id="q", params={**params, "capture_traces": False}),
                             context("score"))
    assert untraced.outputs["trajectories"] is None


def test_integrations_refuse_options_they_set_themselves() -> None:
    assert spec_fields({"batch_size": 5}, {"crash_retries": 0}) == {"batch_size": 5, "crash_retries": 0}
    with pytest.raises(ValueError, match="may not set id"):
        spec_fields({}, {"id": "same-for-all"})
    # Checked before any broker is contacted.
    with pytest.raises(ValueError, match="may not set evaluator"):
        FleetExecutor("redis://127.0.0.1:1/0", generation_options={"evaluator": "noop"})
