"""Submission order and streaming: highest priority first, populations streamed from a file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import redis

from orchestration.api import launcher_app
from orchestration.generation import Generation
from orchestration.local_cluster import LocalRedis, LocalWorker
from orchestration.spec_loading import CandidateFile, SpecError, load_generation
from orchestration.submit import Submitter, create_generation
from tests.conftest import make_spec, run_spec
from workers.contract import PRIORITIES
from workers.ledger import Ledger


def test_submission_takes_the_highest_priority_first(private_redis: LocalRedis) -> None:
    rows = [{"id": f"{p}-{i}", "priority": p} for i in range(3) for p in reversed(PRIORITIES)]
    spec = make_spec(rows, evaluator="noop", objectives={"y": "min"}, max_in_flight=5)
    client = redis.Redis.from_url(private_redis.url)
    ledger = Ledger(client, spec.id)
    assert create_generation(launcher_app(private_redis.url), ledger, spec) == 12
    submitter = Submitter(launcher_app(private_redis.url), ledger, spec.header())

    assert submitter.submit_more(recorded=0) == 5
    assert [client.llen(p) for p in PRIORITIES] == [3, 2, 0, 0]
    assert submitter.submit_more(recorded=5) == 5  # five results back: room for five more
    assert [client.llen(p) for p in PRIORITIES] == [3, 3, 3, 1]
    state = ledger.state()
    assert (state["s_critical"], state["s_high"], state["s_normal"], state["s_low"]) == (
        "3", "3", "3", "1")
    # A new submitter (a resumed launcher) goes on where the state says, not from the start.
    again = Submitter(launcher_app(private_redis.url), ledger, spec.header())
    assert again.submit_more(recorded=10) == 2
    assert [client.llen(p) for p in PRIORITIES] == [3, 3, 3, 3]
    assert again.done


def write_population(tmp_path: Path, rows: list[dict[str, object]]) -> Path:
    (tmp_path / "pop.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = tmp_path / "spec.yaml"
    spec.write_text("evaluator: zdt1\nobjectives: {f1: min, f2: min}\nbatch_timeout: 0.2\n"
                    "candidates_file: pop.jsonl\n")
    return spec


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([{"id": "a"}, {"id": "b", "priority": "soon"}], "pop.jsonl: line 2 (id 'b'): field 'priority'"),
        ([{"id": "a"}, {"id": "a"}], "pop.jsonl: line 2: duplicate candidate id 'a'"),
    ],
)
def test_jsonl_population_is_checked_line_by_line(
    tmp_path: Path, rows: list[dict[str, object]], expected: str
) -> None:
    with pytest.raises(SpecError, match=re.escape(expected)):
        load_generation(write_population(tmp_path, rows))


def test_jsonl_population_streams_into_a_generation(
    redis_url: str, session_worker: LocalWorker, tmp_path: Path
) -> None:
    rows = [{"id": f"c{i}", "priority": PRIORITIES[i % 4], "params": {"x": [i / 40, 0.0]}}
            for i in range(40)]
    spec, population = load_generation(write_population(tmp_path, rows))
    assert isinstance(population, CandidateFile) and population.count == 40
    assert spec.candidates == []  # the spec does not hold the population
    generation: Generation = run_spec(spec, redis_url, candidates=population)
    assert generation.wait(0) == "complete"
    assert sorted(r.candidate_id for r in generation.results()) == sorted(r["id"] for r in rows)
