"""Module-level functions the integration tests run on workers (named by import path)."""

from __future__ import annotations

import math
import os
import signal
import time
from typing import Any


def square(x: float) -> float:
    return x * x


def add(a: float, b: float = 0.0) -> float:
    return a + b


def describe(values: list[Any], *, label: str = "") -> dict[str, Any]:
    """Non-numeric return value: it comes back as the future's result."""
    return {"label": label, "n": len(values), "total": sum(values)}


def shifted_sphere(x: list[float]) -> float:
    """Nevergrad's objective: minimum 0 at (0.5, -0.3); x arrives as a list."""
    return (x[0] - 0.5) ** 2 + (x[1] + 0.3) ** 2


def onemax(individual: list[int]) -> tuple[int]:
    """DEAP's fitness: the number of ones."""
    return (sum(individual),)


def slow_echo(value: Any, seconds: float = 0.2) -> Any:
    time.sleep(seconds)
    return value


def fail(message: str) -> None:
    raise ValueError(message)


def kill_worker() -> None:
    """SIGKILL the pool child running this call (its result is ``crashed``)."""
    os.kill(os.getpid(), signal.SIGKILL)


def not_json() -> Any:
    return {1, 2}


def sqrt_of(x: float) -> float:
    return math.sqrt(x)


def two_objectives(candidate: Any, context: Any) -> dict[str, float]:
    """An evofleet evaluator for Optuna's NSGA-II: f1 = x^2 + y^2, f2 = (x - 2)^2 + y^2.

    The trial numbered ``params.die_on_trial`` (through the candidate's metadata) SIGKILLs its
    pool child instead.
    """
    params = candidate.params
    if candidate.metadata and candidate.metadata.get("trial") == params.get("die_on_trial"):
        os.kill(os.getpid(), signal.SIGKILL)
    x, y = float(params["x"]), float(params.get("y", 0.0))
    return {"f1": x * x + y * y, "f2": (x - 2) ** 2 + y * y}


def parabola(candidate: Any, context: Any) -> float:
    """One objective: (x - 1)^2, minimum 0 at x = 1."""
    return (float(candidate.params["x"]) - 1.0) ** 2
