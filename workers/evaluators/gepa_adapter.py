"""The GEPA side of the fleet: a user's GEPA adapter, named by import path, evaluates one
(candidate, examples) pair in the pool child; its EvaluationBatch returns as JSON ``outputs``."""

from __future__ import annotations

import importlib
import math
from functools import cache
from typing import Any

from workers.contract import Candidate
from workers.evaluators import Evaluation, EvaluationContext
from workers.evaluators.call import to_json


@cache
def load_adapter(path: str) -> Any:
    """The adapter at ``module:attr``: an object with ``evaluate``, or a zero-argument callable
    (a class, a factory) building one; built once per process."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ValueError(f"GEPA adapter {path!r}: expected module:attr")
    found: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        found = getattr(found, part)
    if not hasattr(found, "evaluate") and callable(found):
        found = found()
    if not callable(getattr(found, "evaluate", None)):
        raise TypeError(f"GEPA adapter {path!r} has no evaluate(batch, candidate, capture_traces)")
    return found


def gepa_evaluate(candidate: Candidate, context: EvaluationContext) -> Evaluation:
    """Run ``params.adapter``'s ``evaluate(params.batch, params.candidate, params.capture_traces)``.

    ``outputs`` is the EvaluationBatch as JSON (``outputs``, ``scores``, ``trajectories``,
    ``objective_scores``); the objective is the mean example score. A length mismatch or a
    non-JSON part is an error naming it.
    """
    params = candidate.params
    adapter = load_adapter(str(params["adapter"]))
    examples = list(params["batch"])
    batch = adapter.evaluate(examples, dict(params["candidate"]), bool(params.get("capture_traces")))
    scores = [float(score) for score in batch.scores]
    if len(scores) != len(examples) or len(list(batch.outputs)) != len(examples):
        raise ValueError(
            f"the adapter returned {len(scores)} scores and {len(list(batch.outputs))} outputs "
            f"for {len(examples)} examples"
        )
    trajectories = getattr(batch, "trajectories", None)
    objective_scores = getattr(batch, "objective_scores", None)
    outputs = {
        "outputs": to_json(list(batch.outputs), "outputs"),
        "scores": to_json(scores, "scores"),
        "trajectories": None if trajectories is None else to_json(list(trajectories), "trajectories"),
        "objective_scores": None if objective_scores is None else to_json(objective_scores,
                                                                            "objective_scores"),
    }
    mean = math.fsum(scores) / len(scores) if scores else 0.0
    return Evaluation(scores={name: mean for name in context.objectives}, outputs=outputs)
