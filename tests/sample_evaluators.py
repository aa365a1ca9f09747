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


def quick(candidate: Candidate, context: EvaluationContext) -> Scores:
    """Scores 1.0 at once. Only the learned-cost test names it: what a launcher learns of an
    evaluator's cost lasts the process, so no other test may have taught it."""
    return dict.fromkeys(context.objectives, 1.0)
