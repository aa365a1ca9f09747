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


def test_one_tie_rule_for_best_top_k_and_the_front_whatever_the_order() -> None:
    # Discrete scores tie a lot: 40 candidates on one point, recorded in a random order, and
    # "a0" with the same accuracy but a worse cost (dominated), whose id sorts first.
    tied = [f"t{i:02d}" for i in range(40)]
    random.Random(3).shuffle(tied)
    results = [result("a0", scores={"acc": 0.5, "cost": 9.0})]
    results += [result(cid, scores={"acc": 0.5, "cost": 1.0}) for cid in tied]
    results.append(result("z9", scores={"acc": 0.4, "cost": 0.5}))
    for r in results:
        r.params = {"id": r.candidate_id}
    summary = summarize(results, {"acc": "max", "cost": "min"})
    front = {m["candidate_id"]: m for m in summary["pareto_front"]}
    assert set(front) == {"t00", "z9"}
    assert front["t00"]["ties"] == 39 and front["t00"]["tied_with"] == sorted(tied)[1:]
    # best names the id the front names for that point; equal accuracy is decided by cost,
    # then by the smallest id: never the dominated a0, never an arbitrary one of the ties.
    assert summary["best"]["acc"]["candidate_id"] == "t00"
    assert [e["candidate_id"] for e in summary["top_k"]["acc"]] == ["t00", "t01", "t02", "t03", "t04"]
    assert summary["best"]["cost"]["candidate_id"] == "z9"
    # Every entry carries the params of the candidate it names.
    assert summary["best"]["acc"]["params"] == {"id": "t00"}
    assert all(e["params"] == {"id": e["candidate_id"]} for e in summary["top_k"]["cost"])
    assert front["t00"]["params"] == {"id": "t00"} and front["z9"]["params"] == {"id": "z9"}


def test_single_objective_ties_take_the_smallest_id() -> None:
    ids = [f"c{i}" for i in range(9)]
    random.Random(5).shuffle(ids)
    summary = summarize([result(cid, scores={"y": 1.0}) for cid in ids], {"y": "min"})
    assert summary["best"]["y"]["candidate_id"] == "c0"
    assert [e["candidate_id"] for e in summary["top_k"]["y"]] == ["c0", "c1", "c2", "c3", "c4"]
    assert summary["pareto_front"][0]["candidate_id"] == "c0"


def test_utilization_is_divided_by_the_pool_children_sharing_a_device() -> None:
    # Two children of one CPU worker (same worker and device): both busy the whole 10 s.
    results = [result(f"a{i}", scores={"y": 1.0}, start_s=2.0 * i, eval_s=2.0) for i in range(5)]
    results += [result(f"b{i}", scores={"y": 1.0}, start_s=2.0 * i + 0.5, eval_s=1.5)
                for i in range(5)]
    summary = summarize(results, {"y": "min"},
                        {"created_at": str(T0.timestamp()), "finished_at": str(T0.timestamp() + 10)})
    (worker,) = summary["per_worker"]
    assert worker["slots"] == 2
    assert abs(worker["utilization"] - 17.5 / 20.0) < 1e-9  # was 17.5 / 10 = 1.75
