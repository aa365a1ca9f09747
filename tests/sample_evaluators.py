"""Evaluators for tests, named in specs as ``tests.sample_evaluators:NAME``."""

from __future__ import annotations

import time

from workers.contract import Candidate
from workers.evaluators import EvaluationContext, Scores


def by_params(candidate: Candidate, context: EvaluationContext) -> Scores:
    """Behaves as ``params`` says: raise, sleep, omit an objective, or score ``params.value``."""
    params = candidate.params
    if "raise" in params:
        raise ValueError(params["raise"])
    if "sleep" in params:
        time.sleep(float(params["sleep"]))
    if params.get("omit"):
        return {}
    return {name: float(params.get("value", 1.0)) for name in context.objectives}
