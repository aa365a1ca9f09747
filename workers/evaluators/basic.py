"""Trivial evaluators for overhead benchmarks and time-limit tests."""

from __future__ import annotations

import time

from workers.contract import Candidate
from workers.evaluators import EvaluationContext, Scores


def noop(candidate: Candidate, context: EvaluationContext) -> Scores:
    """Returns at once: 0.0 for every objective."""
    return {name: 0.0 for name in context.objectives}


def _noop_batch(candidates: list[Candidate], context: EvaluationContext) -> list[Scores]:
    return [{name: 0.0 for name in context.objectives} for _ in candidates]


noop.evaluate_batch = _noop_batch  # type: ignore[attr-defined]


def sleep(candidate: Candidate, context: EvaluationContext) -> Scores:
    """Sleeps ``params.seconds`` (default 0.1), then scores every objective with that value."""
    seconds = float(candidate.params.get("seconds", 0.1))
    time.sleep(seconds)
    return {name: seconds for name in context.objectives}
