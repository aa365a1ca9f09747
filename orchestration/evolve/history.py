"""Per-generation history: counts by status, best per objective, front, hypervolume and IGD (pymoo's)."""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

import numpy as np

from orchestration.evolve.spec import RunSpec
from workers.contract import EvaluationResult, Status


@cache
def true_front(name: str) -> np.ndarray:
    """The ZDT problem's Pareto front from pymoo (``pareto_front()``), objectives as minimised."""
    from pymoo.problems import get_problem

    return np.asarray(get_problem(name).pareto_front())


class Archive:
    """Every ``ok`` result so far and its non-dominated set, the run's current front.

    Objectives are kept as minimised (a ``max`` objective negated), as pymoo sees them. The
    front is updated from the old front and the new points only, so a generation costs the
    same whether it is the 2nd or the 500th. ``add`` replaces its arrays and lists, never
    changes them in place, so a ``snapshot()`` stays as it was while the run goes on.
    """

    def __init__(self, objectives: Mapping[str, str]) -> None:
        self.names = list(objectives)
        self.sign = np.array([-1.0 if d == "max" else 1.0 for d in objectives.values()])
        self.F = np.empty((0, len(self.names)))  # every ok point, for the pictures
        self.front_F = np.empty((0, len(self.names)))
        self.front_results: list[EvaluationResult] = []
        self.best = np.full(len(self.names), np.inf)  # as minimised

    def add(self, results: Sequence[EvaluationResult]) -> np.ndarray:
        """Add a generation's ok results; return their F rows."""
        ok = [r for r in results if r.status == Status.ok]
        rows = np.array([[r.scores[n] for n in self.names] for r in ok]).reshape(-1, len(self.names))
        F = rows * self.sign
        if len(F):
            self.F = np.vstack([self.F, F])
            self.best = np.minimum(self.best, F.min(axis=0))
            self._update_front(F, ok)
        return F

    def snapshot(self) -> Archive:
        """The archive as it is now, for files written later (a shallow copy suffices)."""
        return copy.copy(self)

    def _update_front(self, F: np.ndarray, ok: list[EvaluationResult]) -> None:
        from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

        pool_F = np.vstack([self.front_F, F])
        pool = [*self.front_results, *ok]
        index = np.asarray(NonDominatedSorting().do(pool_F, only_non_dominated_front=True))
        _, first = np.unique(pool_F[index], axis=0, return_index=True)  # one per distinct point
        keep = np.sort(index[first])
        self.front_F = pool_F[keep]
        self.front_results = [pool[i] for i in keep]

    def best_scores(self) -> dict[str, float | None]:
        """The best value seen per objective, in the objective's own terms."""
        return {name: (float(value * sign) if np.isfinite(value) else None)
                for name, value, sign in zip(self.names, self.best, self.sign, strict=True)}

    def front(self) -> list[dict[str, Any]]:
        """The current front: candidate and generation ids, params and scores."""
        return [
            {"generation_id": r.generation_id, "candidate_id": r.candidate_id,
             "params": r.params, "scores": dict(r.scores)}
            for r in self.front_results
        ]


def _best_of(spec: RunSpec, results: Sequence[EvaluationResult]) -> dict[str, float | None]:
    """The best ``ok`` value per objective within one generation."""
    ok = [r for r in results if r.status == Status.ok]
    pick = {"min": min, "max": max}
    return {name: (pick[direction](r.scores[name] for r in ok) if ok else None)
            for name, direction in spec.objectives.items()}


def generation_record(spec: RunSpec, index: int, results: Sequence[EvaluationResult],
                      archive: Archive, elapsed_s: float) -> dict[str, Any]:
    """The history line of generation ``index`` (after its results joined the archive)."""
    counts = Counter(r.status.value for r in results)
    front = archive.front_F
    record: dict[str, Any] = {
        "generation": index,
        "id": spec.generation_id(index),
        "counts": {s.value: counts.get(s.value, 0) for s in Status},
        "best": archive.best_scores(),
        "generation_best": _best_of(spec, results),
        "front_size": len(front),
        "hypervolume": None,
        "igd": None,
        "elapsed_s": round(elapsed_s, 3),
    }
    if spec.reference_point is not None and len(front):
        from pymoo.indicators.hv import HV

        reference = np.array(spec.reference_point) * archive.sign
        record["hypervolume"] = float(HV(ref_point=reference)(front))
    if spec.front_name is not None and len(front):
        from pymoo.indicators.igd import IGD

        record["igd"] = float(IGD(true_front(spec.front_name))(front))
    return record
