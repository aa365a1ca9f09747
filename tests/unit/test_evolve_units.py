"""evolve's pure parts: the run spec, Parquet round trips, the archive, the missing-extra message."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from orchestration.cli import app
from orchestration.evolve.algorithms import build_optimizer, reference_directions
from orchestration.evolve.history import Archive
from orchestration.evolve.spec import RunSpec, run_spec_from_dict
from orchestration.evolve.store import RunStore
from orchestration.spec_loading import SpecError
from workers.contract import ErrorInfo, EvaluationResult, Status

BASE = {"id": "r", "evaluator": "zdt1", "objectives": {"f1": "min", "f2": "min"}, "generations": 2,
        "search_space": {"n_var": 3, "low": 0, "high": 1}}


def result(cid: str, status: Status, scores: dict[str, float], x: list[float]) -> EvaluationResult:
    error = None if status == Status.ok else ErrorInfo(type="WorkerLost", message="killed", signal="SIGKILL")
    return EvaluationResult(generation_id="r-g0000", candidate_id=cid, status=status, scores=scores,
                            params={"x": x}, error=error, attempts=1)


def test_results_survive_parquet_bit_for_bit(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "run")
    store.create(RunSpec.model_validate(BASE))
    x = [0.1 + 0.2, 1 / 3, np.nextafter(0.5, 1.0).item()]
    written = [result("x000000", Status.ok, {"f1": 1 / 7, "f2": 2.0**-1074}, x),
               result("x000001", Status.crashed, {}, [0.0, 0.5, 1.0])]
    store.write_results("r-g0000", written, ["f1", "f2"])
    back = store.read_results("r-g0000", ["f1", "f2"])
    assert [(r.candidate_id, r.status, r.scores, r.params) for r in back] == \
        [(r.candidate_id, r.status, r.scores, r.params) for r in written]
    assert back[1].error is not None and back[1].error.signal == "SIGKILL"
    with pytest.raises(FileExistsError, match="resume"):
        store.create(RunSpec.model_validate(BASE))


def test_archive_keeps_the_front_and_best_in_the_objectives_own_terms() -> None:
    archive = Archive({"loss": "min", "acc": "max"})
    archive.add([result("a", Status.ok, {"loss": 1.0, "acc": 0.5}, [0.0]),
                 result("b", Status.ok, {"loss": 2.0, "acc": 0.4}, [0.0]),
                 result("c", Status.timeout, {}, [0.0])])
    archive.add([result("d", Status.ok, {"loss": 0.5, "acc": 0.9}, [0.0]),
                 result("e", Status.ok, {"loss": 3.0, "acc": 0.95}, [0.0])])
    assert sorted(p["candidate_id"] for p in archive.front()) == ["d", "e"]
    assert archive.best_scores() == {"loss": 0.5, "acc": 0.95}
    assert archive.F.shape == (4, 2)


def test_spec_rules_and_bounds_from_an_initial_population(tmp_path: Path) -> None:
    population = tmp_path / "pop.jsonl"
    population.write_text("\n".join(json.dumps({"x": [i / 10, 1 - i / 10]}) for i in range(8)))
    spec = run_spec_from_dict({**BASE, "search_space": None, "initial_population": "pop.jsonl",
                               "population_size": 8}, base=tmp_path)
    optimizer = build_optimizer(spec)
    asked = optimizer.ask()
    assert [p["x"] for p in asked] == [[i / 10, 1 - i / 10] for i in range(8)]  # the file is gen 0
    with pytest.raises(SpecError, match="is not a file"):
        run_spec_from_dict({**BASE, "initial_population": "nope.jsonl"}, base=tmp_path)
    with pytest.raises(SpecError, match="needs a search_space"):
        run_spec_from_dict({**BASE, "search_space": None})
    with pytest.raises(SpecError, match="moead"):
        run_spec_from_dict({**BASE, "algorithm": "moead", "failure": "exclude"})
    with pytest.raises(SpecError, match="algorithm_options for nsga2"):
        build_optimizer(run_spec_from_dict({**BASE, "algorithm_options": {"no_such_option": 1}}))
    assert len(reference_directions(2, 100)) == 100 and len(reference_directions(3, 100)) <= 100


def test_evolve_without_the_extra_names_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "pymoo", None)  # `import pymoo` now raises ImportError
    spec = tmp_path / "run.yaml"
    spec.write_text(json.dumps(BASE))
    outcome = CliRunner().invoke(app, ["evolve", str(spec)])
    assert outcome.exit_code == 2
    assert "pip install 'evofleet[evolve]'" in outcome.output and "pymoo" in outcome.output


def test_history_record_has_generation_and_running_bests() -> None:
    from orchestration.evolve.history import generation_record

    spec = RunSpec.model_validate({**BASE, "objectives": {"f1": "min", "f2": "max"},
                                   "reference_point": [2.0, 0.0]})
    archive = Archive(spec.objectives)
    first = [result("a", Status.ok, {"f1": 1.0, "f2": 1.0}, [0.0]), result("b", Status.crashed, {}, [0.0])]
    archive.add(first)
    generation_record(spec, 0, first, archive, 0.1)
    second = [result("c", Status.ok, {"f1": 1.5, "f2": 0.5}, [0.0])]
    archive.add(second)
    record = generation_record(spec, 1, second, archive, 0.1)
    assert record["generation_best"] == {"f1": 1.5, "f2": 0.5}
    assert record["best"] == {"f1": 1.0, "f2": 1.0}
    assert record["counts"]["ok"] == 1 and record["front_size"] == 1
    assert record["hypervolume"] == pytest.approx((2.0 - 1.0) * (1.0 - 0.0))  # f2 maximised
    assert record["igd"] is None  # zdt1's known front is for f1 and f2 both minimised


def test_an_archive_snapshot_stays_as_it_was_while_the_run_goes_on() -> None:
    spec = RunSpec.model_validate(BASE)
    archive = Archive(spec.objectives)
    archive.add([result("a", Status.ok, {"f1": 1.0, "f2": 1.0}, [0.0])])
    snapshot = archive.snapshot()
    archive.add([result("b", Status.ok, {"f1": 0.5, "f2": 0.5}, [0.0])])
    assert snapshot.F.tolist() == [[1.0, 1.0]] and snapshot.front_F.tolist() == [[1.0, 1.0]]
    assert [r.candidate_id for r in snapshot.front_results] == ["a"]
    assert snapshot.best_scores() == {"f1": 1.0, "f2": 1.0}
    assert archive.best_scores() == {"f1": 0.5, "f2": 0.5}

