"""pymoo on the fleet: the elementwise runner and the ask/tell loop match pymoo's serial run exactly."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.problem import ElementwiseProblem
from pymoo.optimize import minimize as pymoo_minimize
from pymoo.problems import get_problem

from orchestration.integrations.pymoo import FleetRunner, Translation, in_row_order, minimize
from orchestration.local_cluster import LocalWorker
from workers.contract import EvaluationResult, Status

N_VAR, POP, GENS, SEED = 30, 40, 8, 7
EVALUATOR = "tests.pymoo_evaluators:zdt1"


class FleetZDT1(ElementwiseProblem):
    """ZDT1's bounds and sizes; the workers compute its objectives."""

    def __init__(self, runner: FleetRunner) -> None:
        super().__init__(n_var=N_VAR, n_obj=2, xl=0.0, xu=1.0, elementwise_runner=runner)

    def _evaluate(self, x: Any, out: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        raise AssertionError("the runner evaluates on the workers, never here")


def serial_population() -> tuple[np.ndarray, np.ndarray]:
    result = pymoo_minimize(get_problem("zdt1", n_var=N_VAR), NSGA2(pop_size=POP), ("n_gen", GENS),
                            seed=SEED, verbose=False)
    return result.pop.get("X"), result.pop.get("F")


@pytest.mark.slow
def test_elementwise_runner_gives_pymoos_own_population(redis_url: str, session_worker: LocalWorker) -> None:
    X, F = serial_population()
    with FleetRunner(EVALUATOR, ["f1", "f2"], broker_url=redis_url, failure=1e6) as runner:
        result = pymoo_minimize(FleetZDT1(runner), NSGA2(pop_size=POP), ("n_gen", GENS), seed=SEED,
                                verbose=False)
        assert runner.population.generations == GENS
        copy = pickle.loads(pickle.dumps(runner))  # pymoo copies problems: no live client inside
        assert copy.population.fleet.url == redis_url
    assert np.array_equal(result.pop.get("X"), X)
    assert np.array_equal(result.pop.get("F"), F)


@pytest.mark.slow
def test_ask_tell_minimize_gives_pymoos_own_population(redis_url: str, session_worker: LocalWorker) -> None:
    X, F = serial_population()
    result = minimize(get_problem("zdt1", n_var=N_VAR), NSGA2(pop_size=POP), ("n_gen", GENS),
                      evaluator=EVALUATOR, seed=SEED, broker_url=redis_url, failure=1e6)
    assert np.array_equal(result.pop.get("X"), X)
    assert np.array_equal(result.pop.get("F"), F)


def _result(index: int, status: Status, scores: dict[str, float]) -> EvaluationResult:
    return EvaluationResult(generation_id="g", candidate_id=f"x{index:06d}", status=status, scores=scores)


def test_results_in_any_order_map_back_to_rows_and_failures_follow_the_rule() -> None:
    arrived = [
        _result(2, Status.crashed, {}),
        _result(0, Status.ok, {"loss": 1.0, "acc": 0.5, "c": -1.0}),
        _result(1, Status.timeout, {}),
    ]
    rows = in_row_order(arrived, 3)
    assert [r.candidate_id for r in rows] == ["x000000", "x000001", "x000002"]
    F, G, ok = Translation({"loss": "min", "acc": "max"}, ["c"], failure=1e6).matrices(rows)
    assert F.tolist() == [[1.0, -0.5], [1e6, 1e6], [1e6, 1e6]]
    assert G is not None and G.tolist() == [[-1.0], [1e6], [1e6]]
    assert ok.tolist() == [True, False, False]
    F, _, _ = Translation(["loss"], failure="nan").matrices(rows)
    assert np.isnan(F[1:]).all() and F[0, 0] == 1.0
    with pytest.raises(RuntimeError, match="no result"):
        in_row_order(arrived[:2], 3)
    with pytest.raises(ValueError, match="penalty"):
        Translation(["loss"], failure="drop")  # type: ignore[arg-type]


def test_nan_failures_need_pymoos_replacement_value() -> None:
    runner = FleetRunner(EVALUATOR, ["f1", "f2"], failure="nan", broker_url="redis://127.0.0.1:1/0")
    problem = FleetZDT1(runner)
    with pytest.raises(ValueError, match="replace_nan_values_by"):
        problem.evaluate(np.zeros((2, N_VAR)))  # refused before anything is submitted
    with pytest.raises(ValueError, match="every row"):
        FleetRunner(EVALUATOR, ["f1", "f2"], failure="exclude")  # type: ignore[arg-type]


@pytest.mark.slow
def test_the_runnable_example_runs(redis_url: str, session_worker: LocalWorker) -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "pymoo_on_the_fleet.py"
    done = subprocess.run([sys.executable, str(example)], capture_output=True, text=True, timeout=240,
                          env={**os.environ, "EVOFLEET_BROKER_URL": redis_url})
    assert done.returncode == 0, done.stderr
    assert "elementwise runner: " in done.stdout and "ask/tell minimize: " in done.stdout
