"""A generation's summary, computed in one streaming pass over its results."""

from __future__ import annotations

import heapq
import math
import time
from array import array
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from operator import le
from typing import Any

from workers.contract import EvaluationResult, Status

TOP_K = 5


def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """a is no worse than b everywhere and better somewhere (all minimised)."""
    # map(le, ...) rather than a generator: a late generation's front is ~50 points, so a
    # 100-candidate summary calls this thousands of times (4.5 -> 1.7 ms a generation).
    return a != b and all(map(le, a, b))


TIES_LISTED = 100  # per front point: more tied candidates are counted, not named


class _Point:
    """One point of the front: its smallest candidate id (and params), and the others tied with it."""

    __slots__ = ("candidate_id", "params", "scores", "tied", "ties")

    def __init__(
        self, candidate_id: str, scores: Mapping[str, float], params: dict[str, Any] | None
    ) -> None:
        self.candidate_id = candidate_id
        self.scores = dict(scores)
        self.params = params
        self.tied: list[str] = []
        self.ties = 0

    def add_tie(
        self, candidate_id: str, scores: Mapping[str, float], params: dict[str, Any] | None
    ) -> None:
        if candidate_id < self.candidate_id:
            named = candidate_id
            candidate_id, self.candidate_id = self.candidate_id, named
            self.scores, self.params = dict(scores), params
        self.ties += 1
        self.tied.append(candidate_id)
        if len(self.tied) > 2 * TIES_LISTED:
            self.tied = sorted(self.tied)[:TIES_LISTED]


class ParetoFront:
    """The non-dominated set of points seen so far (objectives turned to minimisation).

    Candidates with equal scores all belong to the front (neither dominates the other): each
    point names its smallest candidate id (the tie rule ``best`` and ``top_k`` follow too), and
    lists the others that tie with it (the smallest ``TIES_LISTED``) and their count, so the
    result does not depend on recording order and its size does not grow with ties.
    """

    def __init__(self, objectives: Mapping[str, str]) -> None:
        self.names = list(objectives)
        self.signs = [-1.0 if objectives[name] == "max" else 1.0 for name in self.names]
        self.members: dict[tuple[float, ...], _Point] = {}

    def add(
        self, candidate_id: str, scores: Mapping[str, float], params: dict[str, Any] | None = None
    ) -> None:
        try:
            point = tuple(s * scores[n] for s, n in zip(self.signs, self.names, strict=True))
        except KeyError:
            return
        if any(math.isnan(v) for v in point):
            return
        same = self.members.get(point)
        if same is not None:
            same.add_tie(candidate_id, scores, params)
            return
        if any(dominates(other, point) for other in self.members):
            return
        for other in [other for other in self.members if dominates(point, other)]:
            del self.members[other]
        self.members[point] = _Point(candidate_id, scores, params)

    def as_list(self) -> list[dict[str, Any]]:
        entries = []
        for point in sorted(self.members):
            member = self.members[point]
            entry: dict[str, Any] = {
                "candidate_id": member.candidate_id, "scores": member.scores,
                "params": member.params,
            }
            if member.ties:
                entry["ties"] = member.ties
                entry["tied_with"] = sorted(member.tied)[:TIES_LISTED]
            entries.append(entry)
        return entries


class _Ranked:
    """A top-k entry; ``key`` ascending is better: the objective's cost, the other objectives'
    costs in spec order, then the candidate id. ``<`` means worse, so a heap's top is the worst."""

    __slots__ = ("candidate_id", "key", "params", "scores")

    def __init__(
        self, key: tuple[Any, ...], candidate_id: str, scores: dict[str, float],
        params: dict[str, Any] | None,
    ) -> None:
        self.key = key
        self.candidate_id = candidate_id
        self.scores = scores
        self.params = params

    def __lt__(self, other: _Ranked) -> bool:
        return bool(self.key > other.key)


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[index]


def _stats(values: Sequence[float]) -> dict[str, float | None]:
    return {
        "mean": sum(values) / len(values) if values else None,
        "p50": _percentile(values, 0.50),
        "p95": _percentile(values, 0.95),
    }


class SummaryBuilder:
    """Takes results one at a time (as a collector reads them) and builds the summary."""

    def __init__(self, objectives: Mapping[str, str]) -> None:
        self.objectives = objectives
        self.signs = {n: -1.0 if d == "max" else 1.0 for n, d in objectives.items()}
        self.counts: Counter[str] = Counter()
        self.front = ParetoFront(objectives)
        self.top: dict[str, list[_Ranked]] = {n: [] for n in objectives}
        # Per-result times as C doubles: 8 bytes each instead of a float object and a pointer
        # (a 100,000-candidate generation's collector grew ~5 MiB less).
        self.eval_seconds: dict[tuple[str, str], array[float]] = defaultdict(lambda: array("d"))
        # Per (worker, device): start and end times, to count the pool children it ran on.
        self.spans: dict[tuple[str, str], tuple[array[float], array[float]]] = defaultdict(
            lambda: (array("d"), array("d"))
        )
        self.queue_wait: dict[str, array[float]] = defaultdict(lambda: array("d"))
        self.failed: dict[str, list[str]] = defaultdict(list)
        self.first_start: float | None = None
        self.last_finish: float | None = None

    def add(self, result: EvaluationResult) -> None:
        self.counts[result.status.value] += 1
        if result.status is Status.ok:
            self.front.add(result.candidate_id, result.scores, result.params)
            self._add_top(result)
        elif result.status in (Status.crashed, Status.timeout, Status.error):
            self.failed[result.status.value].append(result.candidate_id)
        seconds = result.eval_seconds
        if seconds is not None and result.started_at and result.finished_at:
            slot = (result.worker or "?", result.device or "?")
            self.eval_seconds[slot].append(seconds)
            starts, ends = self.spans[slot]
            starts.append(result.started_at.timestamp())
            ends.append(result.finished_at.timestamp())
        if result.started_at and result.submitted_at:
            wait = (result.started_at - result.submitted_at).total_seconds()
            self.queue_wait[result.priority.value].append(max(0.0, wait))
        if result.started_at:
            start = result.started_at.timestamp()
            self.first_start = start if self.first_start is None else min(self.first_start, start)
        if result.finished_at:
            end = result.finished_at.timestamp()
            self.last_finish = end if self.last_finish is None else max(self.last_finish, end)

    def _cost(self, result: EvaluationResult, name: str) -> float:
        value = result.scores.get(name)
        if value is None or math.isnan(value):
            return math.inf
        return self.signs[name] * value

    def _add_top(self, result: EvaluationResult) -> None:
        for name in self.objectives:
            value = result.scores.get(name)
            if value is None or math.isnan(value):
                continue
            others = [self._cost(result, other) for other in self.objectives if other != name]
            key = (self.signs[name] * value, *others, result.candidate_id)
            heap = self.top[name]
            if len(heap) < TOP_K:
                heapq.heappush(heap, _Ranked(key, result.candidate_id, result.scores, result.params))
            elif heap[0].key > key:
                heapq.heapreplace(heap, _Ranked(key, result.candidate_id, result.scores, result.params))

    def top_k(self) -> dict[str, list[dict[str, Any]]]:
        return {
            name: [
                {"candidate_id": item.candidate_id, "scores": item.scores, "params": item.params}
                for item in sorted(heap, key=lambda i: i.key)
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
            # Pool children sharing a device (CPU workers) appear as one entry: divide by as many
            # as ever ran at once, so utilization stays a fraction of the time they had.
            slots = max(1, max_overlap(*self.spans[(worker, device)]))
            per_worker.append(
                {
                    "worker": worker,
                    "device": device,
                    "candidates": len(seconds),
                    "slots": slots,
                    "eval_seconds": _stats(seconds),
                    "utilization": sum(seconds) / (wall * slots),
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


def max_overlap(starts: Iterable[float], ends: Iterable[float]) -> int:
    """The most intervals running at once (one that ends as another starts frees its slot)."""
    ordered_ends = sorted(ends)
    running = most = done = 0
    for start in sorted(starts):
        while done < len(ordered_ends) and ordered_ends[done] <= start:
            running -= 1
            done += 1
        running += 1
        most = max(most, running)
    return most


def summarize(
    results: Iterable[EvaluationResult],
    objectives: Mapping[str, str],
    state: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Counts, best and top-k per objective, Pareto front, per-worker timings, queue waits.

    One tie rule everywhere: top-k ranks by the objective, then the other objectives in spec
    order, then the smallest candidate id; ``best`` is top-k's first, so it is always on the
    front and is the id its front point names (a point names its smallest candidate id).
    """
    builder = SummaryBuilder(objectives)
    for result in results:
        builder.add(result)
    return builder.summary(state)
