"""The ``call`` evaluator: a function named by import path, called with JSON args, its return value
as the result's ``outputs`` (what ``FleetExecutor`` runs on the workers)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from workers.contract import Candidate
from workers.evaluators import Evaluation, EvaluationContext, resolve


def to_json(value: Any, path: str = "value") -> Any:
    """``value`` as plain JSON: tuples become lists, numpy arrays and scalars become lists and
    Python numbers. Raises TypeError naming the first part (``path``) that is not JSON."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"{path} is {value}, which JSON cannot carry")
        return value
    if isinstance(value, Mapping):
        converted: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{path} has a key that is not a string: {key!r}")
            converted[key] = to_json(item, f"{path}.{key}")
        return converted
    if isinstance(value, (list, tuple)):
        return [to_json(item, f"{path}[{index}]") for index, item in enumerate(value)]
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):
        # ndarray -> nested lists, numpy scalar -> int/float/bool; checked again for NaN.
        return to_json(value.tolist(), path)
    raise TypeError(f"{path} is a {type(value).__name__}, which is not JSON")


def call(candidate: Candidate, context: EvaluationContext) -> Evaluation:
    """Call ``params.fn`` (``module:qualname``) with ``params.args`` and ``params.kwargs``.

    The return value (converted by ``to_json``) is the result's ``outputs``; the objective's
    score is the value itself when it is a number, else 0.0.
    """
    params = candidate.params
    function = resolve(str(params["fn"]))
    value = function(*params.get("args", []), **params.get("kwargs", {}))
    outputs = to_json(value, "the return value")
    number = isinstance(outputs, (int, float)) and not isinstance(outputs, bool)
    score = float(outputs) if number else 0.0
    return Evaluation(scores={name: score for name in context.objectives}, outputs=outputs)
