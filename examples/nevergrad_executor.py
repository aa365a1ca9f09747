"""Nevergrad on the fleet: ``optimizer.minimize(objective, executor=FleetExecutor())``.

Run from the repository root: ``python -m examples.nevergrad_executor`` (local mode: a private
Redis and one worker for the executor's life; set EVOFLEET_BROKER_URL to use a deployment).
The objective is named by import path, so it lives at module level; Nevergrad's numpy array
argument arrives on the worker as a list. Workers import this module to find ``objective``:
keep its top level light.
"""

from __future__ import annotations

from orchestration.integrations.executor import FleetExecutor


def objective(x: list[float]) -> float:
    """A shifted sphere: minimum 0 at (0.5, -0.3)."""
    return (x[0] - 0.5) ** 2 + (x[1] + 0.3) ** 2


def main() -> None:
    import nevergrad as ng  # here, not at the top: the workers import this module for objective
    import numpy as np

    optimizer = ng.optimizers.OnePlusOne(parametrization=ng.p.Array(shape=(2,)), budget=64,
                                         num_workers=8)
    optimizer.parametrization.random_state = np.random.RandomState(0)  # a reproducible run
    with FleetExecutor() as executor:
        recommendation = optimizer.minimize(objective, executor=executor, batch_mode=True)
        print(f"{len(executor.generation_ids)} generations")
    print("best x:", [round(float(v), 3) for v in recommendation.value])


if __name__ == "__main__":
    main()
