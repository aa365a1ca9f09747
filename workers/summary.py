"""A generation's summary, computed in one streaming pass over its results."""

from __future__ import annotations

import heapq
import math
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from workers.contract import EvaluationResult, Status

TOP_K = 5


def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """a is no worse than b everywhere and better somewhere (all minimised)."""
    return all(x <= y for x, y in zip(a, b, strict=True)) and a != b


TIES_LISTED = 100  # per front point: more tied candidates are counted, not named


class _Point:
    """One point of the front: its first candidate by id, and the others that tie with it."""

    __slots__ = ("candidate_id", "scores", "tied", "ties")

    def __init__(self, candidate_id: str, scores: Mapping[str, float]) -> None:
        self.candidate_id = candidate_id
        self.scores = dict(scores)
        self.tied: list[str] = []
        self.ties = 0

    def add_tie(self, candidate_id: str, scores: Mapping[str, float]) -> None:
        if candidate_id < self.candidate_id:
            candidate_id, self.candidate_id, self.scores = self.candidate_id, candidate_id, dict(scores)
        self.ties += 1
        self.tied.append(candidate_id)
        if len(self.tied) > 2 * TIES_LISTED:
            self.tied = sorted(self.tied)[:TIES_LISTED]


class ParetoFront:
    """The non-dominated set of points seen so far (objectives turned to minimisation).

    Candidates with equal scores all belong to the front (neither dominates the other): each
    point names its first candidate by id, and lists the others that tie with it (the first
    ``TIES_LISTED``) and their count, so the result does not depend on recording order and its
    size does not grow with ties.
    """

    def __init__(self, objectives: Mapping[str, str]) -> None:
        self.names = list(objectives)
        self.signs = [-1.0 if objectives[name] == "max" else 1.0 for name in self.names]
        self.members: dict[tuple[float, ...], _Point] = {}

    def add(self, candidate_id: str, scores: Mapping[str, float]) -> None:
        try:
            point = tuple(s * scores[n] for s, n in zip(self.signs, self.names, strict=True))
        except KeyError:
            return
        if any(math.isnan(v) for v in point):
            return
        same = self.members.get(point)
        if same is not None:
            same.add_tie(candidate_id, scores)
            return
        if any(dominates(other, point) for other in self.members):
            return
        for other in [other for other in self.members if dominates(point, other)]:
            del self.members[other]
        self.members[point] = _Point(candidate_id, scores)

    def as_list(self) -> list[dict[str, Any]]:
        entries = []
        for point in sorted(self.members):
            member = self.members[point]
            entry: dict[str, Any] = {"candidate_id": member.candidate_id, "scores": member.scores}
            if member.ties:
                entry["ties"] = member.ties
                entry["tied_with"] = sorted(member.tied)[:TIES_LISTED]
            entries.append(entry)
        return entries


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[index]


def _stats(values: list[float]) -> dict[str, float | None]:
    return {
        "mean": sum(values) / len(values) if values else None,
        "p50": _percentile(values, 0.50),
        "p95": _percentile(values, 0.95),
    }


class SummaryBuilder:
    """Takes results one at a time (as a collector reads them) and builds the summary."""

    def __init__(self, objectives: Mapping[str, str]) -> None:
        self.objectives = objectives
        self.counts: Counter[str] = Counter()
        self.front = ParetoFront(objectives)
        self.top: dict[str, list[tuple[float, str, dict[str, float]]]] = {n: [] for n in objectives}
        self.eval_seconds: dict[tuple[str, str], list[float]] = defaultdict(list)
        self.queue_wait: dict[str, list[float]] = defaultdict(list)
        self.failed: dict[str, list[str]] = defaultdict(list)
        self.first_start: float | None = None
        self.last_finish: float | None = None

    def add(self, result: EvaluationResult) -> None:
        self.counts[result.status.value] += 1
        if result.status is Status.ok:
            self.front.add(result.candidate_id, result.scores)
            self._add_top(result)
        elif result.status in (Status.crashed, Status.timeout, Status.error):
            self.failed[result.status.value].append(result.candidate_id)
        seconds = result.eval_seconds
        if seconds is not None:
            self.eval_seconds[(result.worker or "?", result.device or "?")].append(seconds)
        if result.started_at and result.submitted_at:
            wait = (result.started_at - result.submitted_at).total_seconds()
            self.queue_wait[result.priority.value].append(max(0.0, wait))
        if result.started_at:
            start = result.started_at.timestamp()
            self.first_start = start if self.first_start is None else min(self.first_start, start)
        if result.finished_at:
            end = result.finished_at.timestamp()
            self.last_finish = end if self.last_finish is None else max(self.last_finish, end)

    def _add_top(self, result: EvaluationResult) -> None:
        for name, direction in self.objectives.items():
            value = result.scores.get(name)
            if value is None or math.isnan(value):
                continue
            key = value if direction == "max" else -value
            heap = self.top[name]
            item = (key, result.candidate_id, result.scores)
            if len(heap) < TOP_K:
                heapq.heappush(heap, item)
            elif item[:2] > heap[0][:2]:
                heapq.heapreplace(heap, item)

    def top_k(self) -> dict[str, list[dict[str, Any]]]:
        return {
            name: [
                {"candidate_id": cid, "scores": scores}
                for _, cid, scores in sorted(heap, key=lambda i: (-i[0], i[1]))
            ]
            for name, heap in self.top.items()
        }

    def summary(self, state: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The summary of the results added so far (``state``: the generation's state hash)."""
        state = state or {}
        created = float(state.get("created_at") or self.first_start or time.time())
        finished = float(state.get("finished_at") or self.last_finish or time.time())
        wall = max(finished - created, 1e-9)
        total = sum(self.counts.values())
        top = self.top_k()
        per_worker = []
        for (worker, device), seconds in sorted(self.eval_seconds.items()):
            per_worker.append(
                {
                    "worker": worker,
                    "device": device,
                    "candidates": len(seconds),
                    "eval_seconds": _stats(seconds),
                    "utilization": sum(seconds) / wall,
                }
            )
        return {
            "generation_id": state.get("generation_id"),
            "total": int(state.get("total") or total),
            "recorded": total,
            "counts": {status.value: self.counts.get(status.value, 0) for status in Status},
            "best": {name: (items[0] if items else None) for name, items in top.items()},
            "top_k": top,
            "pareto_front": self.front.as_list(),
            "wall_seconds": wall,
            "throughput_per_s": total / wall,
            "per_worker": per_worker,
            "queue_wait_seconds": {p: _stats(v) for p, v in sorted(self.queue_wait.items())},
            "failed": {status: sorted(ids) for status, ids in sorted(self.failed.items())},
        }


def summarize(
    results: Iterable[EvaluationResult],
    objectives: Mapping[str, str],
    state: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Counts, best and top-k per objective, Pareto front, per-worker timings, queue waits."""
    builder = SummaryBuilder(objectives)
    for result in results:
        builder.add(result)
    return builder.summary(state)
