"""The ZDT family against known values, and a sampled front against the true Pareto front."""

from __future__ import annotations

import math
import random

import pytest

from workers.contract import Candidate, EvaluationResult, Status
from workers.evaluators import EvaluationContext, batch_function, resolve
from workers.evaluators.zdt import ZDT3_FRONT_INTERVALS, ZDT6_F1_MIN, true_front_f2
from workers.summary import summarize

PROBLEMS = ["zdt1", "zdt2", "zdt3", "zdt4", "zdt6"]


def context() -> EvaluationContext:
    return EvaluationContext(device="cpu", generation_id="g", objectives={"f1": "min", "f2": "min"},
                             worker="test")


def score(name: str, x: list[float]) -> dict[str, float]:
    return dict(resolve(name)(Candidate(id="c", params={"x": x}), context()))


def test_known_values() -> None:
    # ZDT1 at x = (0.25, 0.5, 0.5): g = 1 + 9 * 1.0 / 2 = 5.5; f2 = 5.5 * (1 - sqrt(0.25 / 5.5))
    assert score("zdt1", [0.25, 0.5, 0.5]) == pytest.approx(
        {"f1": 0.25, "f2": 5.5 * (1 - math.sqrt(0.25 / 5.5))}
    )
    assert score("zdt2", [0.5, 0.0, 0.0]) == pytest.approx({"f1": 0.5, "f2": 0.75})
    # ZDT4 with x[1:] = 0 is on the Pareto set: g = 1.
    assert score("zdt4", [0.36, 0.0, 0.0, 0.0]) == pytest.approx({"f1": 0.36, "f2": 0.4})


@pytest.mark.parametrize("name", PROBLEMS)
def test_pareto_set_points_lie_on_true_front(name: str) -> None:
    for x1 in (0.0, 0.05, 0.3, 0.61, 0.9, 1.0):
        scores = score(name, [x1] + [0.0] * 9)
        expected = true_front_f2(name, scores["f1"])
        if expected is not None:
            assert scores["f2"] == pytest.approx(expected, abs=1e-9)


def test_batch_matches_single() -> None:
    rng = random.Random(3)
    candidates = [Candidate(id=str(i), params={"x": [rng.random() for _ in range(6)]}) for i in range(20)]
    evaluator = resolve("zdt3")
    batch = batch_function(evaluator)
    assert batch is not None
    together = batch(candidates, context())
    for candidate, scores in zip(candidates, together, strict=True):
        assert dict(scores) == pytest.approx(dict(evaluator(candidate, context())))


def test_out_of_bounds_variable_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"params.x\[1\]=1.5 is outside \[0.0, 1.0\]"):
        score("zdt1", [0.5, 1.5])
    with pytest.raises(ValueError, match="list of >= 2 numbers"):
        score("zdt2", [0.5])


def true_front_points(name: str, n: int = 2000) -> list[tuple[float, float]]:
    points = []
    low = ZDT6_F1_MIN if name == "zdt6" else 0.0
    for i in range(n + 1):
        f1 = low + (1 - low) * i / n
        f2 = true_front_f2(name, f1)
        if f2 is not None:
            points.append((f1, f2))
    if name == "zdt3":
        points += [(hi, true_front_f2(name, hi) or 0.0) for _, hi in ZDT3_FRONT_INTERVALS]
    return points


def distance_to_front(name: str, f1: float, f2: float, front: list[tuple[float, float]]) -> float:
    return min(math.hypot(f1 - a, f2 - b) for a, b in front)


@pytest.mark.parametrize("name", PROBLEMS)
def test_summary_front_of_sampled_generation_lies_on_true_front(name: str) -> None:
    """Random points plus points of the Pareto set: the computed front is the true front."""
    rng = random.Random(7)
    dims = 10
    evaluator = resolve(name)
    candidates = []
    # A grid over the Pareto set (x[1:] = 0) with its extremes, including ZDT6's smallest f1
    # at x1 = atan(9 pi) / (6 pi), where d/dx exp(-4x) sin^6(6 pi x) = 0.
    grid = [i / 400 for i in range(401)] + [math.atan(9 * math.pi) / (6 * math.pi)]
    for i, x1 in enumerate(grid):
        candidates.append(Candidate(id=f"p{i}", params={"x": [x1] + [0.0] * (dims - 1)}))
    for i in range(300):  # and random points, which the front must leave out
        x = [rng.random()] + [rng.uniform(-5, 5) if name == "zdt4" else rng.random()
                              for _ in range(dims - 1)]
        candidates.append(Candidate(id=f"r{i}", params={"x": x}))
    batch = batch_function(evaluator)
    assert batch is not None
    results = [
        EvaluationResult(generation_id="g", candidate_id=c.id, status=Status.ok, scores=dict(s))
        for c, s in zip(candidates, batch(candidates, context()), strict=True)
    ]
    summary = summarize(results, {"f1": "min", "f2": "min"})
    front = summary["pareto_front"]
    assert len(front) >= 20
    true_front = true_front_points(name)
    assert not [m for m in front if m["candidate_id"].startswith("r")]
    for member in front:
        f1, f2 = member["scores"]["f1"], member["scores"]["f2"]
        assert distance_to_front(name, f1, f2, true_front) < 0.02, (name, member)
