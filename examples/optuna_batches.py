"""Optuna on the fleet: each batch of ``study.ask()``-ed trials is one generation.

Run from the repository root: ``python -m examples.optuna_batches`` (local mode; set
EVOFLEET_BROKER_URL to use a deployment). The evaluator is an ordinary evofleet evaluator:
it gets the trial's params as ``candidate.params``; a crashed, timed-out or failing
evaluation becomes a FAIL trial with the error in its user attributes.
"""

from __future__ import annotations

from workers.contract import Candidate
from workers.evaluators import EvaluationContext


def evaluate(candidate: Candidate, context: EvaluationContext) -> float:
    """A stand-in for a training run: the loss of a learning rate and a depth."""
    lr, depth = float(candidate.params["lr"]), int(candidate.params["depth"])
    return (lr - 0.01) ** 2 * 1e4 + (depth - 4) ** 2


def main() -> None:
    # Imported here, not at the top: the workers import this module for ``evaluate``.
    import optuna
    from optuna.distributions import FloatDistribution, IntDistribution

    from orchestration.integrations.optuna import optimize

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    space = {"lr": FloatDistribution(1e-4, 1e-1, log=True), "depth": IntDistribution(1, 8)}
    optimize(study, "examples.optuna_batches:evaluate", space, n_trials=16, batch_size=4)
    print(f"{len(study.trials)} trials, best {study.best_value:.4f} at {study.best_params}")


if __name__ == "__main__":
    main()
