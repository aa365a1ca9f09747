"""The summary's pure parts: Pareto front, top-k, per-worker stats, queue waits, failed ids."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from workers.contract import ErrorInfo, EvaluationResult, Priority, Status
from workers.summary import TIES_LISTED, ParetoFront, dominates, summarize

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def result(
    cid: str,
    status: Status = Status.ok,
    scores: dict[str, float] | None = None,
    *,
    worker: str = "w1",
    priority: Priority = Priority.normal,
    wait_s: float = 0.0,
    start_s: float = 0.0,
    eval_s: float = 1.0,
) -> EvaluationResult:
    started = T0 + timedelta(seconds=start_s)
    return EvaluationResult(
        generation_id="g",
        candidate_id=cid,
        status=status,
        scores=scores or {},
        error=None if status is Status.ok else ErrorInfo(type=status.value),
        worker=worker,
        device="cpu",
        priority=priority,
        submitted_at=started - timedelta(seconds=wait_s),
        started_at=started,
        finished_at=started + timedelta(seconds=eval_s),
    )


def test_dominates_is_strict() -> None:
    assert dominates((1.0, 1.0), (2.0, 1.0))
    assert not dominates((1.0, 1.0), (1.0, 1.0))
    assert not dominates((1.0, 3.0), (2.0, 1.0))


def test_pareto_front_of_a_known_set_with_mixed_directions() -> None:
    # accuracy maximised, cost minimised: the front is a, b, c; d and e are dominated.
    points = {
        "a": {"acc": 0.9, "cost": 10.0},
        "b": {"acc": 0.8, "cost": 5.0},
        "c": {"acc": 0.5, "cost": 1.0},
        "d": {"acc": 0.7, "cost": 6.0},  # dominated by b
        "e": {"acc": 0.5, "cost": 2.0},  # dominated by c
        "f": {"acc": 0.9, "cost": 10.0},  # ties with a: on the front too, named by a's point
        "g": {"acc": float("nan"), "cost": 0.0},  # NaN is ignored
        "h": {"cost": 0.0},  # a missing objective is ignored
    }
    front = ParetoFront({"acc": "max", "cost": "min"})
    for cid, scores in points.items():
        front.add(cid, scores)
    members = front.as_list()
    assert [m["candidate_id"] for m in members] == ["a", "b", "c"]
    assert members[0]["ties"] == 1 and members[0]["tied_with"] == ["f"]
    assert "ties" not in members[1]


def test_many_ties_are_counted_and_the_first_ids_named_whatever_the_order() -> None:
    ids = [f"c{i:05d}" for i in range(1000)]
    random.Random(7).shuffle(ids)
    front = ParetoFront({"y": "max"})
    for cid in ids:
        front.add(cid, {"y": 1.0})
    (member,) = front.as_list()
    assert member["candidate_id"] == "c00000" and member["ties"] == 999
    assert member["tied_with"] == [f"c{i:05d}" for i in range(1, TIES_LISTED + 1)]


def test_pareto_front_drops_members_a_later_point_dominates() -> None:
    front = ParetoFront({"f1": "min", "f2": "min"})
    front.add("x", {"f1": 2.0, "f2": 2.0})
    front.add("y", {"f1": 3.0, "f2": 1.0})
    front.add("z", {"f1": 1.0, "f2": 1.0})
    assert [m["candidate_id"] for m in front.as_list()] == ["z"]


def test_summary_counts_top_k_front_workers_waits_and_failures() -> None:
    results = [
        result(f"ok{i}", scores={"f1": float(i), "f2": float(10 - i)}, worker=f"w{i % 2}",
               priority=Priority.high if i < 3 else Priority.low, wait_s=float(i),
               start_s=float(i), eval_s=1.0 + i % 2)
        for i in range(8)
    ]
    results += [
        result("bad", Status.error, worker="w9"),
        result("slow", Status.timeout, worker="w9"),
        result("dead", Status.crashed, worker="w9"),
        result("dead2", Status.crashed, worker="w9"),
    ]
    summary = summarize(results, {"f1": "min", "f2": "max"},
                        {"generation_id": "g", "total": "12", "created_at": str(T0.timestamp()),
                         "finished_at": str(T0.timestamp() + 10)})
    assert summary["total"] == 12 and summary["recorded"] == 12
    assert summary["counts"] == {"ok": 8, "error": 1, "timeout": 1, "crashed": 2, "cancelled": 0}
    # f1 minimised: best is ok0; f2 maximised: best is ok0 as well (f2 = 10).
    top_f1 = [e["candidate_id"] for e in summary["top_k"]["f1"]]
    assert top_f1 == ["ok0", "ok1", "ok2", "ok3", "ok4"]
    assert summary["best"]["f2"]["candidate_id"] == "ok0"
    assert [m["candidate_id"] for m in summary["pareto_front"]] == ["ok0"]
    assert summary["failed"] == {
        "crashed": ["dead", "dead2"], "error": ["bad"], "timeout": ["slow"],
    }
    workers = {w["worker"]: w for w in summary["per_worker"]}
    assert [workers[w]["candidates"] for w in ("w0", "w1", "w9")] == [4, 4, 4]
    assert workers["w1"]["eval_seconds"]["mean"] == 2.0
    assert abs(workers["w1"]["utilization"] - 8.0 / 10.0) < 1e-9
    waits = summary["queue_wait_seconds"]
    assert waits["high"]["p50"] == 1.0 and waits["high"]["p95"] == 2.0
    # nearest rank over 3..7: p50 is the 3rd value, p95 the 5th
    assert waits["low"]["p50"] == 5.0 and waits["low"]["p95"] == 7.0
    assert waits["normal"]["p95"] == 0.0  # the failures waited 0 s
    assert summary["wall_seconds"] == 10.0
    assert summary["throughput_per_s"] == 1.2


def test_summary_of_nothing() -> None:
    summary = summarize([], {"f1": "min"})
    assert summary["recorded"] == 0
    assert summary["pareto_front"] == [] and summary["best"] == {"f1": None}
