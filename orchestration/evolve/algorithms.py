"""The optimizer behind a run: a pymoo algorithm over ask/tell, or a user's ``module:Class``."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Sequence
from math import comb
from typing import Any, Protocol

import numpy as np

from orchestration.evolve.spec import RunSpec, read_initial_population
from orchestration.integrations.pymoo import Translation, tell
from orchestration.spec_loading import SpecError
from workers.contract import EvaluationResult


class Optimizer(Protocol):
    """What the run loop drives: ``ask`` a generation's params, ``tell`` their results (same order)."""

    def ask(self) -> list[dict[str, Any]]: ...

    def tell(self, results: Sequence[EvaluationResult]) -> None: ...

    def population(self) -> dict[str, np.ndarray] | None: ...


def reference_directions(n_obj: int, pop_size: int) -> np.ndarray:
    """Das-Dennis directions, as many as fit in ``pop_size`` (exactly ``pop_size`` for 2 objectives)."""
    from pymoo.util.ref_dirs import get_reference_directions

    partitions = 1
    while comb(partitions + 1 + n_obj - 1, n_obj - 1) <= pop_size:
        partitions += 1
    return np.asarray(get_reference_directions("das-dennis", n_obj, n_partitions=partitions))


def _accepted(cls: type) -> set[str]:
    """Keyword names the constructors along ``cls``'s MRO take (pymoo passes **kwargs upwards
    and drops what nobody takes, so a misspelled option would be ignored silently)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is not None:
            names |= {p.name for p in inspect.signature(init).parameters.values()
                      if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names - {"self"}


def _check_options(spec: RunSpec, cls: type) -> None:
    unknown = sorted(set(spec.algorithm_options) - _accepted(cls))
    if unknown:
        raise SpecError(f"algorithm_options for {spec.algorithm}: unknown option {unknown[0]!r} "
                        f"(known: {', '.join(sorted(_accepted(cls)))})")


def _pymoo_algorithm(spec: RunSpec, sampling: np.ndarray | None) -> Any:
    options = dict(spec.algorithm_options)
    if sampling is not None:
        options["sampling"] = sampling
    n_obj = len(spec.objectives)
    if spec.algorithm == "nsga2":
        from pymoo.algorithms.moo.nsga2 import NSGA2

        _check_options(spec, NSGA2)
        return NSGA2(pop_size=spec.population_size, **options)
    if spec.algorithm == "nsga3":
        from pymoo.algorithms.moo.nsga3 import NSGA3

        _check_options(spec, NSGA3)
        return NSGA3(reference_directions(n_obj, spec.population_size),
                     pop_size=spec.population_size, **options)
    if spec.algorithm == "moead":
        # pymoo's sequential MOEAD asks one offspring at a time; ParallelMOEAD asks a population.
        from pymoo.algorithms.moo.moead import ParallelMOEAD

        _check_options(spec, ParallelMOEAD)
        return ParallelMOEAD(reference_directions(n_obj, spec.population_size), **options)
    from pymoo.algorithms.soo.nonconvex.ga import GA

    _check_options(spec, GA)
    return GA(pop_size=spec.population_size, **options)


class PymooOptimizer:
    """A pymoo algorithm set up on a bounds-only problem (the workers compute the objectives).

    Failures follow the spec's rule: ``penalty`` scores every objective ``spec.penalty`` (in
    pymoo's minimised terms), ``exclude`` leaves the candidate out of ``tell``.
    """

    def __init__(self, spec: RunSpec) -> None:
        from pymoo.core.problem import Problem

        sampling = None
        if spec.initial_population is not None:
            sampling = np.asarray(read_initial_population(spec.initial_population), dtype=np.float64)
        if spec.search_space is not None:
            low, high = spec.search_space.bounds()
        else:
            assert sampling is not None  # the spec's validation guarantees one of them
            low, high = list(sampling.min(axis=0)), list(sampling.max(axis=0))
        if sampling is not None and sampling.shape[1] != len(low):
            raise SpecError(f"initial_population rows have {sampling.shape[1]} values, the "
                            f"search space {len(low)} variables")
        self.problem = Problem(n_var=len(low), n_obj=len(spec.objectives), xl=np.array(low),
                               xu=np.array(high), vtype=float)
        try:
            self.algorithm = _pymoo_algorithm(spec, sampling)
        except TypeError as exc:  # an unknown algorithm_options key
            raise SpecError(f"algorithm_options for {spec.algorithm}: {exc}") from None
        self.algorithm.setup(self.problem, termination=("n_gen", spec.generations), seed=spec.seed,
                             verbose=False)
        failure: float | str = "exclude" if spec.failure == "exclude" else spec.penalty
        self.translation = Translation(spec.objectives, failure=failure)  # type: ignore[arg-type]
        self._asked: Any = None

    def ask(self) -> list[dict[str, Any]]:
        self._asked = self.algorithm.ask()
        return [{"x": row.tolist()} for row in np.asarray(self._asked.get("X"), dtype=np.float64)]

    def tell(self, results: Sequence[EvaluationResult]) -> None:
        tell(self.algorithm, self._asked, results, self.translation)

    def population(self) -> dict[str, np.ndarray]:
        """The algorithm's current population: X and F (minimised)."""
        pop = self.algorithm.pop
        return {"X": np.asarray(pop.get("X")), "F": np.asarray(pop.get("F"))}


class UserOptimizer:
    """A user's ``module:Class``, built as ``Class(seed=SEED, population_size=N, **options)``.

    ``ask(n) -> list[params]`` and ``tell(results)`` (EvaluationResults, in ask order, whatever
    their status: the class decides what a failure means). Replay on resume requires it to be
    deterministic given its seed.
    """

    def __init__(self, spec: RunSpec) -> None:
        module_name, _, attr = spec.algorithm.partition(":")
        try:
            target: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                target = getattr(target, part)
        except (ImportError, AttributeError) as exc:
            raise SpecError(f"algorithm {spec.algorithm!r} does not import: {exc}") from None
        if not all(callable(getattr(target, name, None)) for name in ("ask", "tell")):
            raise SpecError(f"algorithm {spec.algorithm!r} has no ask(n) and tell(results) methods")
        try:
            self.instance = target(seed=spec.seed, population_size=spec.population_size,
                                   **spec.algorithm_options)
        except TypeError as exc:
            raise SpecError(f"algorithm {spec.algorithm!r}: {exc}") from None
        self.n = spec.population_size

    def ask(self) -> list[dict[str, Any]]:
        return [dict(params) for params in self.instance.ask(self.n)]

    def tell(self, results: Sequence[EvaluationResult]) -> None:
        self.instance.tell(list(results))

    def population(self) -> None:
        return None


def build_optimizer(spec: RunSpec) -> Optimizer:
    """A fresh, seeded optimizer for ``spec``; raises SpecError for bad options or classes."""
    return PymooOptimizer(spec) if spec.is_pymoo else UserOptimizer(spec)
