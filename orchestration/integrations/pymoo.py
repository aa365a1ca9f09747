"""pymoo on the fleet: an ``elementwise_runner`` and an ask/tell loop, each population one generation."""

from __future__ import annotations

import atexit
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from typing import Any, Literal

import numpy as np

from orchestration.api import launch_and_collect
from orchestration.generation import Generation
from orchestration.local_cluster import local_cluster
from orchestration.settings import LaunchSettings
from orchestration.spec_loading import spec_from_dict
from workers.contract import EvaluationResult, Status

Failure = float | Literal["nan"]
"""What a candidate that did not end ``ok`` becomes: a penalty for every objective and
constraint, or NaN for pymoo to replace with the problem's ``replace_nan_values_by``."""
AskTellFailure = float | Literal["nan", "exclude"]
"""As Failure, or ``exclude``: the candidate is left out of the population handed to ``tell``."""
WAIT_SLACK_S = 60.0  # past the generation deadline, how long to wait for its end


def candidate_id(index: int) -> str:
    """The id of a population's row ``index`` (row order is restored from it)."""
    return f"x{index:06d}"


def population_candidates(X: Any) -> list[dict[str, Any]]:
    """One candidate per row of ``X``: params ``{"x": [floats]}`` (JSON keeps float64 exactly)."""
    rows = np.atleast_2d(np.asarray(X, dtype=np.float64))
    return [{"id": candidate_id(i), "params": {"x": row.tolist()}} for i, row in enumerate(rows)]


def in_row_order(results: Sequence[EvaluationResult], n: int) -> list[EvaluationResult]:
    """Results sorted back into population order, whatever order they arrived in."""
    by_id = {result.candidate_id: result for result in results}
    missing = [candidate_id(i) for i in range(n) if candidate_id(i) not in by_id]
    if missing:
        raise RuntimeError(f"{len(missing)} candidates have no result (first: {missing[0]})")
    return [by_id[candidate_id(i)] for i in range(n)]


class Translation:
    """Scores to pymoo's F (minimised; a ``max`` objective is negated) and G (feasible <= 0)."""

    def __init__(
        self,
        objectives: Mapping[str, str] | Sequence[str],
        constraints: Sequence[str] = (),
        failure: AskTellFailure = "nan",
    ) -> None:
        self.directions = (
            dict(objectives) if isinstance(objectives, Mapping) else dict.fromkeys(objectives, "min")
        )
        self.constraints = list(constraints)
        if not self.directions:
            raise ValueError("at least one objective is needed")
        if bad := [d for d in self.directions.values() if d not in ("min", "max")]:
            raise ValueError(f"objective directions are min or max, not {bad[0]!r}")
        if clash := set(self.directions) & set(self.constraints):
            raise ValueError(f"{sorted(clash)[0]!r} is both an objective and a constraint")
        if not (failure in ("nan", "exclude") or isinstance(failure, int | float)):
            raise ValueError(f"failure must be a number (a penalty), 'nan' or 'exclude', not {failure!r}")
        self.failure = failure

    def spec_objectives(self) -> dict[str, str]:
        """What the generation spec declares: objectives, then constraints (as scores to return)."""
        return {**self.directions, **dict.fromkeys(self.constraints, "min")}

    def matrices(
        self, results: Sequence[EvaluationResult]
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """F, G (None without constraints) and the mask of ``ok`` rows, in the results' order."""
        fill = np.nan if self.failure in ("nan", "exclude") else float(self.failure)
        n = len(results)
        F = np.full((n, len(self.directions)), fill)
        G = np.full((n, len(self.constraints)), fill) if self.constraints else None
        ok = np.array([result.status == Status.ok for result in results], dtype=bool)
        for row, result in enumerate(results):
            if not ok[row]:
                continue
            for col, (name, direction) in enumerate(self.directions.items()):
                value = result.scores[name]
                F[row, col] = -value if direction == "max" else value
            if G is not None:
                G[row] = [result.scores[name] for name in self.constraints]
        return F, G, ok


class Fleet:
    """Where the generations run: a deployment's broker, or ONE local cluster for all of them.

    Local mode (no broker URL given or in ``EVOFLEET_BROKER_URL``) starts its private Redis and
    workers at the first generation and keeps them until ``close()`` (or interpreter exit).
    """

    def __init__(self, broker_url: str | None = None, settings: LaunchSettings | None = None) -> None:
        self.settings = settings or LaunchSettings()
        self.broker_url = broker_url or self.settings.broker_url
        self._stack: ExitStack | None = None
        self._local_url: str | None = None

    @property
    def url(self) -> str:
        """The broker URL, starting the local cluster on first use."""
        if self.broker_url is not None:
            return self.broker_url
        if self._local_url is None:
            self._stack = ExitStack()
            self._local_url = self._stack.enter_context(
                local_cluster(
                    workers=self.settings.local_workers,
                    concurrency=self.settings.local_concurrency,
                    redis_binary=self.settings.redis_server,
                )
            )
            atexit.register(self.close)
        return self._local_url

    def close(self) -> None:
        """Stop the local cluster, if one was started."""
        if self._stack is not None:
            atexit.unregister(self.close)
            self._stack.close()
            self._stack = None
            self._local_url = None

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        # A copy (pymoo deep-copies problems and algorithms) must not own the live cluster.
        state = self.__dict__.copy()
        state["_stack"] = state["_local_url"] = None
        return state


class PopulationEvaluator:
    """Evaluates a population matrix as one generation per call, ids ``PREFIX-g0000``, ...

    Args:
        evaluator: a registered evaluator name or ``module:function``; it receives
            ``params["x"]`` (the row as a list of floats).
        translation: objectives, constraints and the failure rule.
        fleet: where to run (default: a local cluster kept for the evaluator's life).
        prefix: generation id prefix (default ``pymoo-<random>``).
        spec_fields: generation spec limits (``soft_time_limit``, ``time_limit``, ``deadline``,
            ``chunk_size``, ``crash_retries``, ...).
    """

    def __init__(
        self,
        evaluator: str,
        translation: Translation,
        *,
        fleet: Fleet | None = None,
        prefix: str | None = None,
        spec_fields: Mapping[str, Any] | None = None,
    ) -> None:
        self.evaluator = evaluator
        self.translation = translation
        self.fleet = fleet or Fleet()
        self.prefix = prefix or f"pymoo-{uuid.uuid4().hex[:8]}"
        self.spec_fields = {"chunk_size": "auto", "batch_timeout": 0.2, **(spec_fields or {})}
        self.generations = 0
        # Validated once (and early: a bad evaluator or limit fails here); generations differ
        # only in the id's number.
        self._template = spec_from_dict(
            {**self.spec_fields, "id": self._generation_id(0), "evaluator": evaluator,
             "objectives": translation.spec_objectives()},
            source="evaluator", allow_empty=True,
        )

    def _generation_id(self, index: int) -> str:
        return f"{self.prefix}-g{index:04d}"

    def evaluate(
        self, X: Any, *, on_launch: Callable[[Generation], None] | None = None
    ) -> list[EvaluationResult]:
        """Every row's result, in row order."""
        candidates = population_candidates(X)
        spec = self._template.model_copy(update={"id": self._generation_id(self.generations)})
        self.generations += 1
        results = launch_and_collect(spec, candidates, broker_url=self.fleet.url,
                                     settings=self.fleet.settings, timeout=spec.deadline + WAIT_SLACK_S,
                                     on_launch=on_launch)
        return in_row_order(results, len(candidates))


class FleetRunner:
    """A pymoo ``elementwise_runner``: each population is one evofleet generation.

    Failures: a candidate that ends ``crashed``, ``timeout``, ``error`` or ``cancelled`` gets
    ``failure`` for every objective and constraint: a number (a penalty), or ``"nan"``, which
    pymoo replaces with the problem's ``replace_nan_values_by`` (required then).

    The workers run the named evaluator, not the problem's ``_evaluate``: ``f`` (pymoo's
    ElementwiseEvaluationFunction) holds live Python objects that never cross the wire. Use
    ``problem = MyProblem(elementwise_runner=FleetRunner("pkg.mod:fn", ["f1", "f2"]))``.
    """

    def __init__(
        self,
        evaluator: str,
        objectives: Mapping[str, str] | Sequence[str],
        *,
        constraints: Sequence[str] = (),
        failure: Failure = "nan",
        broker_url: str | None = None,
        settings: LaunchSettings | None = None,
        prefix: str | None = None,
        **spec_fields: Any,
    ) -> None:
        if str(failure) == "exclude":  # a typo-proof check the type does not make
            raise ValueError("an elementwise runner must return every row: failure is a number or 'nan'")
        self.population = PopulationEvaluator(
            evaluator, Translation(objectives, constraints, failure),
            fleet=Fleet(broker_url, settings), prefix=prefix, spec_fields=spec_fields,
        )

    def __call__(self, f: Any, X: Any) -> list[dict[str, Any]]:
        """pymoo's runner interface: one dict (``F``, and ``G`` with constraints) per row."""
        translation = self.population.translation
        problem = getattr(f, "problem", None)
        if translation.failure == "nan" and getattr(problem, "replace_nan_values_by", 0) is None:
            raise ValueError(
                "failure='nan' needs the problem's replace_nan_values_by (e.g. 1e6), or give a "
                "penalty: FleetRunner(..., failure=1e6)"
            )
        F, G, _ = translation.matrices(self.population.evaluate(X))
        if G is None:
            return [{"F": F[i]} for i in range(len(F))]
        return [{"F": F[i], "G": G[i]} for i in range(len(F))]

    def close(self) -> None:
        """Stop the local cluster (if the runner started one)."""
        self.population.fleet.close()

    def __enter__(self) -> FleetRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        # As pymoo's own runners: a copy drops the live client (the Fleet drops its cluster).
        return self.__dict__.copy()


def tell(algorithm: Any, pop: Any, results: Sequence[EvaluationResult], translation: Translation) -> int:
    """Hand ``pop``'s results (in row order) to ``algorithm.tell``; return how many failed.

    Raises RuntimeError when ``exclude`` leaves nothing to select from.
    """
    from pymoo.problems.static import StaticProblem

    F, G, ok = translation.matrices(results)
    keep = ok if translation.failure == "exclude" else np.ones(len(results), dtype=bool)
    if not keep.any():
        raise RuntimeError("no candidate of the generation ended ok: nothing to select from")
    index = np.flatnonzero(keep)
    infills = pop[index]
    values = {"F": F[index]} if G is None else {"F": F[index], "G": G[index]}
    # The algorithm's own evaluator, so that its n_eval (and termination by n_eval) counts them.
    algorithm.evaluator.eval(StaticProblem(algorithm.problem, **values), infills,
                             skip_already_evaluated=False)
    algorithm.tell(infills=infills)
    return int((~ok).sum())


def minimize(
    problem: Any,
    algorithm: Any,
    termination: Any = None,
    *,
    evaluator: str,
    objectives: Mapping[str, str] | Sequence[str] | None = None,
    constraints: Sequence[str] = (),
    failure: AskTellFailure = "nan",
    seed: int | None = None,
    broker_url: str | None = None,
    settings: LaunchSettings | None = None,
    prefix: str | None = None,
    **spec_fields: Any,
) -> Any:
    """pymoo's ``minimize`` over ask/tell, each ``ask()`` evaluated as one evofleet generation.

    ``problem`` gives only bounds and sizes (its ``_evaluate`` is never called); the workers
    run ``evaluator``. Objectives default to ``f1..fN`` (minimised). Failures: see
    ``AskTellFailure`` (with ``"nan"`` the problem's ``replace_nan_values_by`` applies).
    Returns the algorithm's pymoo ``Result``.
    """
    names = objectives if objectives is not None else [f"f{i + 1}" for i in range(problem.n_obj)]
    translation = Translation(names, constraints, failure)
    algorithm.setup(problem, termination=termination, seed=seed, verbose=False)
    population = PopulationEvaluator(evaluator, translation, fleet=Fleet(broker_url, settings),
                                     prefix=prefix, spec_fields=spec_fields)
    with population.fleet:
        while algorithm.has_next():
            pop = algorithm.ask()
            tell(algorithm, pop, population.evaluate(pop.get("X")), translation)
    return algorithm.result()
