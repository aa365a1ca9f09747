"""DEAP on the fleet: ``toolbox.register("map", executor.map)``, each generation's
evaluations one evofleet generation.

Run from the repository root: ``python -m examples.deap_map`` (local mode; set
EVOFLEET_BROKER_URL to use a deployment).
"""

from __future__ import annotations

import random

from deap import algorithms, base, creator, tools

from orchestration.integrations.executor import FleetExecutor


def onemax(individual: list[int]) -> tuple[int]:
    """The fitness: how many ones (the individual arrives on the worker as a plain list)."""
    return (sum(individual),)


def main() -> None:
    creator.create("FitnessMax", base.Fitness, weights=(1.0,))
    creator.create("Individual", list, fitness=creator.FitnessMax)
    random.seed(1)
    toolbox = base.Toolbox()
    toolbox.register("bit", random.randint, 0, 1)
    toolbox.register("individual", tools.initRepeat, creator.Individual, toolbox.bit, 40)
    toolbox.register("population", tools.initRepeat, list, toolbox.individual)
    toolbox.register("evaluate", onemax)
    toolbox.register("mate", tools.cxTwoPoint)
    toolbox.register("mutate", tools.mutFlipBit, indpb=0.05)
    toolbox.register("select", tools.selTournament, tournsize=3)
    stats = tools.Statistics(lambda individual: individual.fitness.values[0])
    stats.register("max", max)
    with FleetExecutor() as executor:
        toolbox.register("map", executor.map)
        _, logbook = algorithms.eaSimple(toolbox.population(n=30), toolbox, cxpb=0.5, mutpb=0.2,
                                         ngen=5, stats=stats, verbose=False)
    print("best per generation:", [entry["max"] for entry in logbook])


if __name__ == "__main__":
    main()
