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
