"""An evaluator for the evolve benchmark: ZDT1 after ``seconds`` of sleep (a 0.1 s simulation)."""

from __future__ import annotations

import time

from workers.contract import Candidate
from workers.evaluators import EvaluationContext, Scores
from workers.evaluators.zdt import zdt1

SECONDS = 0.1


def slow_zdt1(candidate: Candidate, context: EvaluationContext) -> Scores:
    """Sleeps SECONDS, then scores ZDT1 (the built-in torch one)."""
    time.sleep(SECONDS)
    return zdt1(candidate, context)
