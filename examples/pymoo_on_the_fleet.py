"""pymoo's NSGA-II on ZDT1, each population evaluated on the fleet.

Run: ``python examples/pymoo_on_the_fleet.py``.

Two ways, same result as pymoo's own serial run with the same seed:
1. ``FleetRunner`` as the problem's ``elementwise_runner`` (pymoo's own ``minimize``);
2. ``orchestration.integrations.pymoo.minimize``, pymoo's loop over ask/tell.
The workers run the registered ``zdt1`` evaluator (your own: a ``module:function`` importable on
them). Without EVOFLEET_BROKER_URL each way keeps one local cluster for its whole run.
"""

from __future__ import annotations

from typing import Any

from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.problem import ElementwiseProblem
from pymoo.optimize import minimize
from pymoo.problems import get_problem

from orchestration.integrations import pymoo as fleet

GENERATIONS, POPULATION, SEED = 5, 20, 1


class ZDT1OnTheFleet(ElementwiseProblem):
    """ZDT1's bounds and sizes; the workers compute f1 and f2."""

    def __init__(self, runner: fleet.FleetRunner) -> None:
        super().__init__(n_var=30, n_obj=2, xl=0.0, xu=1.0, elementwise_runner=runner)

    def _evaluate(self, x: Any, out: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("evaluated on the workers by the `zdt1` evaluator")


def main() -> None:
    # A crashed or timed-out candidate scores 1e6 on both objectives (or failure="nan" with the
    # problem's replace_nan_values_by).
    with fleet.FleetRunner("zdt1", ["f1", "f2"], failure=1e6, soft_time_limit=30) as runner:
        by_runner = minimize(ZDT1OnTheFleet(runner), NSGA2(pop_size=POPULATION),
                             ("n_gen", GENERATIONS), seed=SEED, verbose=False)
    by_ask_tell = fleet.minimize(get_problem("zdt1"), NSGA2(pop_size=POPULATION),
                                 ("n_gen", GENERATIONS), evaluator="zdt1", seed=SEED, failure=1e6)
    for name, result in (("elementwise runner", by_runner), ("ask/tell minimize", by_ask_tell)):
        print(f"{name}: {len(result.F)} points on the front, best f1 {result.F[:, 0].min():.4f}")


if __name__ == "__main__":
    main()
