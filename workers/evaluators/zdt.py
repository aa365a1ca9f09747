"""The ZDT benchmark family (Zitzler, Deb, Thiele 2000) in torch, with their true Pareto fronts.

Params: ``x``, a list of decision variables (at least 2). ``x[0]`` is in [0, 1]; the rest are in
[0, 1] as well except for ZDT4, where they are in [-5, 5]. Objectives ``f1`` and ``f2``, both
minimised. A batch of candidates is scored in one vectorised call on the context's device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from workers.contract import Candidate
from workers.evaluators import EvaluationContext, Scores

ZDT3_FRONT_INTERVALS: tuple[tuple[float, float], ...] = (
    (0.0, 0.0830015349),
    (0.1822287280, 0.2577623634),
    (0.4093136748, 0.4538821041),
    (0.6183967944, 0.6525117038),
    (0.8233317983, 0.8518328654),
)
ZDT6_F1_MIN = 0.2807753191


def _objectives(name: str, x: Any) -> tuple[Any, Any]:
    """f1, f2 for a (batch, n) tensor of decision variables."""
    import torch

    n = x.shape[1]
    x1, rest = x[:, 0], x[:, 1:]
    if name == "zdt4":
        g = 1 + 10 * (n - 1) + (rest**2 - 10 * torch.cos(4 * math.pi * rest)).sum(dim=1)
    elif name == "zdt6":
        g = 1 + 9 * (rest.sum(dim=1) / (n - 1)) ** 0.25
    else:
        g = 1 + 9 * rest.sum(dim=1) / (n - 1)
    if name == "zdt6":
        f1 = 1 - torch.exp(-4 * x1) * torch.sin(6 * math.pi * x1) ** 6
    else:
        f1 = x1
    ratio = f1 / g
    if name in ("zdt1", "zdt4"):
        h = 1 - torch.sqrt(ratio)
    elif name in ("zdt2", "zdt6"):
        h = 1 - ratio**2
    else:  # zdt3
        h = 1 - torch.sqrt(ratio) - ratio * torch.sin(10 * math.pi * f1)
    return f1, g * h


def _bounds(name: str, index: int) -> tuple[float, float]:
    return (-5.0, 5.0) if name == "zdt4" and index > 0 else (0.0, 1.0)


def _decision_matrix(name: str, candidates: Sequence[Candidate], device: Any) -> Any:
    import torch

    rows = []
    for candidate in candidates:
        x = candidate.params.get("x")
        if not isinstance(x, list) or len(x) < 2:
            raise ValueError(f"candidate {candidate.id!r}: params.x must be a list of >= 2 numbers")
        for i, value in enumerate(x):
            low, high = _bounds(name, i)
            if not isinstance(value, int | float) or not low <= value <= high:
                raise ValueError(
                    f"candidate {candidate.id!r}: params.x[{i}]={value!r} is outside [{low}, {high}]"
                )
        rows.append([float(v) for v in x])
    if len({len(r) for r in rows}) > 1:
        raise ValueError("candidates of one batch must have the same number of variables")
    return torch.tensor(rows, dtype=torch.float64, device=device)


def _make(name: str) -> Callable[[Candidate, EvaluationContext], Scores]:
    def evaluate_batch(candidates: Sequence[Candidate], context: EvaluationContext) -> list[Scores]:
        x = _decision_matrix(name, candidates, context.device)
        f1, f2 = _objectives(name, x)
        return [
            {"f1": float(a), "f2": float(b)}
            for a, b in zip(f1.cpu().tolist(), f2.cpu().tolist(), strict=True)
        ]

    def evaluate(candidate: Candidate, context: EvaluationContext) -> Scores:
        return evaluate_batch([candidate], context)[0]

    evaluate.__name__ = evaluate.__qualname__ = name
    evaluate.__doc__ = f"{name.upper()}: minimise f1 and f2 of params.x."
    evaluate.evaluate_batch = evaluate_batch  # type: ignore[attr-defined]
    return evaluate


zdt1 = _make("zdt1")
zdt2 = _make("zdt2")
zdt3 = _make("zdt3")
zdt4 = _make("zdt4")
zdt6 = _make("zdt6")


def true_front_f2(name: str, f1: float) -> float | None:
    """f2 on the true Pareto front at ``f1``, or None where the front has no point."""
    if name in ("zdt1", "zdt4"):
        return 1 - math.sqrt(f1) if 0 <= f1 <= 1 else None
    if name == "zdt2":
        return 1 - f1**2 if 0 <= f1 <= 1 else None
    if name == "zdt6":
        return 1 - f1**2 if ZDT6_F1_MIN - 1e-9 <= f1 <= 1 else None
    if name == "zdt3":
        if any(low - 1e-9 <= f1 <= high + 1e-9 for low, high in ZDT3_FRONT_INTERVALS):
            return 1 - math.sqrt(f1) - f1 * math.sin(10 * math.pi * f1)
        return None
    raise ValueError(f"unknown ZDT problem {name!r}")
