"""Optimizers on the fleet, one small module each, every one a thin translation to generations.

- ``executor``: ``FleetExecutor``, a ``concurrent.futures.Executor`` (Nevergrad, DEAP, any code
  that takes an Executor).
- ``optuna``: ``optimize(study, evaluator, ...)``, each batch of ask()ed trials one generation.
- ``gepa``: ``FleetAdapter``, a GEPA adapter whose evaluations run on the workers.
- ``pymoo``: an elementwise runner and an ask/tell helper for pymoo algorithms.
- ``fleet``: where their generations run (a deployment, or one local cluster kept for the run).
"""
