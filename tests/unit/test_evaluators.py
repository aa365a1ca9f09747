"""The evaluator registry: entry points, explicit module:function, clear errors."""

from __future__ import annotations

import time

import pytest

from workers.contract import Candidate
from workers.evaluators import EvaluationContext, UnknownEvaluator, registered, resolve
from workers.evaluators.basic import noop, sleep


def context() -> EvaluationContext:
    return EvaluationContext(device="cpu", generation_id="g", objectives={"a": "max", "b": "min"},
                             worker="test")


def test_builtins_are_registered_as_entry_points() -> None:
    names = registered()
    for name in ("zdt1", "zdt2", "zdt3", "zdt4", "zdt6", "noop", "sleep"):
        assert name in names
    assert names["noop"] == "workers.evaluators.basic:noop"
    assert resolve("noop") is noop


def test_module_function_resolves() -> None:
    assert resolve("workers.evaluators.basic:sleep") is sleep
    assert resolve("tests.sample_evaluators:by_params").__name__ == "by_params"


def test_not_callable_is_rejected() -> None:
    with pytest.raises(UnknownEvaluator, match="is not callable"):
        resolve("workers.evaluators:ENTRY_POINT_GROUP")


def test_noop_and_sleep_score_every_objective() -> None:
    assert noop(Candidate(id="c"), context()) == {"a": 0.0, "b": 0.0}
    started = time.monotonic()
    assert sleep(Candidate(id="c", params={"seconds": 0.05}), context()) == {"a": 0.05, "b": 0.05}
    assert time.monotonic() - started >= 0.05


def test_checked_scores_accepts_numbers_and_says_what_is_wrong() -> None:
    import torch

    from workers.tasks import checked_scores

    two = {"a": "max", "b": "min"}
    assert checked_scores({"a": 1, "b": torch.tensor(0.5), "extra": 3}, two) == {
        "a": 1.0, "b": 0.5, "extra": 3.0}
    assert checked_scores(0.25, {"loss": "min"}) == {"loss": 0.25}  # Optuna-style bare number
    assert checked_scores(torch.tensor(2.0), {"loss": "min"}) == {"loss": 2.0}
    cases: list[tuple[object, str]] = [
        (0.25, "must return {objective: number}, got float"),  # two objectives: which one?
        ([1.0, 2.0], "got list"),
        ({"a": 1.0}, "no score for objective(s) ['b']"),
        ({"a": "high", "b": 1.0}, "scores are not numbers"),
        ({"a": float("nan"), "b": float("inf")}, "score(s) not finite: {'a': nan, 'b': inf}"),
    ]
    for returned, message in cases:
        with pytest.raises((TypeError, ValueError)) as raised:
            checked_scores(returned, two)  # type: ignore[arg-type]
        assert message in str(raised.value)
    with pytest.raises(TypeError):
        checked_scores(True, {"loss": "min"})
