"""Evaluators that misbehave on purpose, for the acceptance tests (named ``module:function``).

Each run appends the candidate id, its pid and the time to ``params.log`` first, so a test can
count how often a candidate really ran, whatever killed its process afterwards.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from workers.contract import Candidate
from workers.evaluators import EvaluationContext, Scores


def faulty(candidate: Candidate, context: EvaluationContext) -> Scores:
    """Behaves as ``params.mode`` says: ``ok`` (sleep ``seconds``), ``kill`` (SIGKILL itself,
    first forking a child that lives on ``linger`` seconds if given),
    ``exit`` (``sys.exit(code)``), ``hang`` (ignore the soft limit's SIGALRM, then sleep).

    Scores every objective with ``params.value`` (default 1.0); appends the id to
    ``params.done_log`` just before returning.
    """
    params = candidate.params
    log = params.get("log")
    if log:
        with Path(log).open("a") as file:
            file.write(f"{candidate.id} {os.getpid()} {time.time():.3f}\n")
    mode = params.get("mode", "ok")
    seconds = float(params.get("seconds", 0.0))
    if mode == "kill":
        linger = float(params.get("linger", 0.0))
        if linger and os.fork() == 0:
            # A grandchild (a data loader, a helper) holds the pool's pipes open after its
            # parent dies: the pool cannot see the death on them, only by reaping.
            time.sleep(linger)
            os._exit(0)
        os.kill(os.getpid(), signal.SIGKILL)
    elif mode == "exit":
        sys.exit(int(params.get("code", 3)))
    elif mode == "hang":
        # Like a call blocked in C code: the soft limit's signal never gets through.
        signal.signal(signal.SIGALRM, signal.SIG_IGN)
        time.sleep(seconds)
    else:
        time.sleep(seconds)
    done_log = params.get("done_log")
    if done_log:
        with Path(done_log).open("a") as file:
            file.write(f"{candidate.id}\n")
    return {name: float(params.get("value", 1.0)) for name in context.objectives}


def runs(log: Path) -> dict[str, int]:
    """How many times each candidate started, read from a ``faulty`` log file."""
    counts: dict[str, int] = {}
    if log.exists():
        for line in log.read_text().splitlines():
            cid = line.split()[0]
            counts[cid] = counts.get(cid, 0) + 1
    return counts
