"""Bad input gives one clear paragraph naming the file, the candidate and the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestration.spec_loading import SpecError, load_spec

GOOD = """
id: gen-0001
evaluator: zdt1
objectives: {f1: min, f2: min}
soft_time_limit: 30
time_limit: 40
candidates:
  - {id: c1, priority: high, params: {x: [0.1, 0.5, 0.9]}}
  - {id: c2, params: {x: [0.2, 0.5, 0.9]}}
"""


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(path: Path) -> str:
    with pytest.raises(SpecError) as info:
        load_spec(path)
    return str(info.value)


def test_good_spec_loads_with_defaults(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, GOOD))
    assert spec.id == "gen-0001"
    assert [c.id for c in spec.candidates] == ["c1", "c2"]
    assert spec.candidates[1].priority.value == "normal"
    assert spec.batch_size == 50 and spec.crash_retries == 1


def test_json_spec_and_generated_id(tmp_path: Path) -> None:
    data = {"evaluator": "noop", "objectives": {"y": "max"}, "candidates": [{"id": "a"}]}
    spec = load_spec(write(tmp_path, json.dumps(data), "spec.json"))
    assert spec.id.startswith("gen-") and len(spec.id) > 8


def test_candidates_file_jsonl(tmp_path: Path) -> None:
    (tmp_path / "pop.jsonl").write_text(
        '{"id": "a", "params": {"x": [0.1, 0.2]}}\n\n{"id": "b", "priority": "low"}\n'
    )
    text = "evaluator: zdt1\nobjectives: {f1: min, f2: min}\ncandidates_file: pop.jsonl\n"
    spec = load_spec(write(tmp_path, text))
    assert [c.id for c in spec.candidates] == ["a", "b"]


def test_malformed_yaml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "evaluator: zdt1\ncandidates: [\n")
    message = error_of(path)
    assert str(path) in message and "malformed YAML" in message


def test_duplicate_candidate_ids(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, GOOD.replace("id: c2", "id: c1")))
    assert "duplicate candidate id 'c1'" in message and "candidate #1" in message


def test_unknown_priority_names_candidate_and_field(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, GOOD.replace("priority: high", "priority: urgent")))
    assert "candidate #0 (id 'c1'), field 'priority'" in message
    assert "critical" in message  # the allowed values are listed


def test_unknown_evaluator(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, GOOD.replace("evaluator: zdt1", "evaluator: zdt99")))
    assert "field 'evaluator'" in message and "unknown evaluator 'zdt99'" in message
    assert "zdt1" in message  # known names are listed


def test_module_function_that_does_not_import(tmp_path: Path) -> None:
    text = GOOD.replace("evaluator: zdt1", "evaluator: no_such_module_xyz:score")
    message = error_of(write(tmp_path, text))
    assert "does not import" in message and "no_such_module_xyz" in message


def test_module_function_missing_attribute(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, GOOD.replace("evaluator: zdt1", "evaluator: json:nope")))
    assert "has no attribute 'nope'" in message


def test_params_must_be_a_json_object(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, GOOD.replace("params: {x: [0.2, 0.5, 0.9]}", "params: [1, 2]")))
    assert "candidate #1 (id 'c2'), field 'params'" in message


@pytest.mark.parametrize(("value", "reason"), [
    (".nan", "must be plain JSON: params.lr is nan"),
    ("[1, {when: 2024-01-31}]", "must be plain JSON: params.lr[1].when is a date"),
])
def test_params_must_survive_json(tmp_path: Path, value: str, reason: str) -> None:
    """YAML's NaN and dates have no JSON form: they would reach the evaluator changed."""
    text = GOOD.replace("params: {x: [0.2, 0.5, 0.9]}", f"params: {{lr: {value}}}")
    message = error_of(write(tmp_path, text))
    assert "candidate #1 (id 'c2'), field 'params'" in message and reason in message


def test_missing_candidates_file(tmp_path: Path) -> None:
    text = "evaluator: zdt1\nobjectives: {f1: min}\ncandidates_file: nowhere.jsonl\n"
    message = error_of(write(tmp_path, text))
    assert "candidates_file" in message and "nowhere.jsonl" in message and "does not exist" in message


@pytest.mark.parametrize("field", ["soft_time_limit", "time_limit", "deadline", "batch_size"])
def test_non_positive_limits(tmp_path: Path, field: str) -> None:
    message = error_of(write(tmp_path, GOOD + f"{field}: 0\n"))
    assert f"field '{field}'" in message and "greater than 0" in message


def test_time_limit_below_soft_time_limit(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, GOOD.replace("time_limit: 40", "time_limit: 10")))
    assert "time_limit (10.0) must not be below soft_time_limit (30.0)" in message


def test_unknown_field_is_rejected(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, GOOD + "batch_sise: 10\n"))
    assert "batch_sise" in message


def test_empty_population(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "evaluator: zdt1\nobjectives: {f1: min}\ncandidates: []\n"))
    assert "no candidates" in message


def test_missing_spec_file(tmp_path: Path) -> None:
    assert "no such file" in error_of(tmp_path / "absent.yaml")
