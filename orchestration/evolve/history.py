"""Per-generation history: counts by status, best per objective, front, hypervolume and IGD (pymoo's)."""

from __future__ import annotations

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
    """Every ``ok`` result so far; its non-dominated set is the run's current front.

    Objectives are kept as minimised (a ``max`` objective negated), as pymoo sees them.
    """

    def __init__(self, objectives: Mapping[str, str]) -> None:
        self.names = list(objectives)
        self.sign = np.array([-1.0 if d == "max" else 1.0 for d in objectives.values()])
        self.F = np.empty((0, len(self.names)))
        self.results: list[EvaluationResult] = []
        self._front: np.ndarray | None = None

    def add(self, results: Sequence[EvaluationResult]) -> np.ndarray:
        """Add a generation's ok results; return their F rows."""
        ok = [r for r in results if r.status == Status.ok]
        rows = np.array([[r.scores[n] for n in self.names] for r in ok]).reshape(-1, len(self.names))
        F = rows * self.sign
        self.F = np.vstack([self.F, F])
        self.results.extend(ok)
        self._front = None
        return F

    def front_index(self) -> np.ndarray:
        """Indices of the non-dominated results (one per distinct point)."""
        if self._front is None:
            if len(self.F) == 0:
                self._front = np.empty(0, dtype=int)
            else:
                from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

                index = NonDominatedSorting().do(self.F, only_non_dominated_front=True)
                _, first = np.unique(self.F[index], axis=0, return_index=True)
                self._front = np.sort(np.asarray(index)[first])
        return self._front

    def front(self) -> list[dict[str, Any]]:
        """The current front: candidate and generation ids, params and scores."""
        return [
            {"generation_id": r.generation_id, "candidate_id": r.candidate_id,
             "params": r.params, "scores": dict(r.scores)}
            for r in (self.results[i] for i in self.front_index())
        ]


def generation_record(spec: RunSpec, index: int, results: Sequence[EvaluationResult],
                      archive: Archive, elapsed_s: float) -> dict[str, Any]:
    """The history line of generation ``index`` (after its results joined the archive)."""
    counts = Counter(r.status.value for r in results)
    front = archive.F[archive.front_index()]
    best: dict[str, float | None] = {}
    for name, direction in spec.objectives.items():
        values = [r.scores[name] for r in archive.results]
        best[name] = (max(values) if direction == "max" else min(values)) if values else None
    record: dict[str, Any] = {
        "generation": index,
        "id": spec.generation_id(index),
        "counts": {s.value: counts.get(s.value, 0) for s in Status},
        "best": best,
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
