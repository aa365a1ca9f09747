"""Worker-side evaluators that run pymoo's own problem code (``tests.pymoo_evaluators:NAME``)."""

from __future__ import annotations

import os
import signal
import time
from functools import cache
from typing import Any

import numpy as np

from workers.contract import Candidate
from workers.evaluators import EvaluationContext, Scores


@cache
def _zdt1(n_var: int) -> Any:
    from pymoo.problems import get_problem

    return get_problem("zdt1", n_var=n_var)


def zdt1(candidate: Candidate, context: EvaluationContext) -> Scores:
    """pymoo's ZDT1 ``problem.evaluate`` on ``params.x``: f1, f2 exactly as pymoo computes them."""
    x = np.asarray(candidate.params["x"], dtype=np.float64)
    f = _zdt1(len(x)).evaluate(x[None, :])[0]
    return {"f1": float(f[0]), "f2": float(f[1])}


def flaky_zdt1(candidate: Candidate, context: EvaluationContext) -> Scores:
    """ZDT1, but about one candidate in ten kills its pool child or overruns its time limit.

    Which one is decided by ``x[1]`` alone, so a rerun fails the same candidates.
    """
    bucket = int(float(candidate.params["x"][1]) * 1e6) % 20
    if bucket == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    if bucket == 1:
        time.sleep(float(candidate.params.get("hang_s", 30.0)))
    return zdt1(candidate, context)


def slow_zdt1(candidate: Candidate, context: EvaluationContext) -> Scores:
    """ZDT1 after ``params.sleep_s`` (default 0.1 s): a generation that is still running when cancelled."""
    time.sleep(float(candidate.params.get("sleep_s", 0.1)))
    return zdt1(candidate, context)
