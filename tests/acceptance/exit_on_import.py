"""An evaluator module that kills a pool child on import (a broken C extension would too)."""

import sys

from billiard.process import current_process

from workers.contract import Candidate
from workers.evaluators import EvaluationContext, Scores

if current_process().name.startswith("ForkPoolWorker"):  # the launcher may import it safely
    sys.exit(5)


def evaluate(candidate: Candidate, context: EvaluationContext) -> Scores:
    """Scores 1.0 everywhere (only reached outside a pool child)."""
    return {name: 1.0 for name in context.objectives}
