"""Bad input gives one clear paragraph naming the file, the candidate and the field."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from orchestration import spec_reading
from orchestration.spec_loading import SpecError, load_generation, load_spec, spec_from_dict

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
    ("[0.5, .inf, 0.25]", "must be plain JSON: params.lr[1] is inf"),
    ("[0.5, 0.25, .nan]", "must be plain JSON: params.lr[2] is nan"),
    ('"a\\ud800"', "params.lr is not UTF-8 text: it holds a lone surrogate U+D800"),
    ('{"\\udfff": 1}', "params.lr key is not UTF-8 text: it holds a lone surrogate U+DFFF"),
])
def test_params_must_survive_json(tmp_path: Path, value: str, reason: str) -> None:
    """YAML's NaN and dates have no JSON form: they would reach the evaluator changed."""
    text = GOOD.replace("params: {x: [0.2, 0.5, 0.9]}", f"params: {{lr: {value}}}")
    message = error_of(write(tmp_path, text))
    assert "candidate #1 (id 'c2'), field 'params'" in message and reason in message


def test_a_vector_of_floats_whose_sum_overflows_is_plain_json() -> None:
    """Finite values are accepted even where their sum (the vector check's shortcut) is inf."""
    from workers.contract import Candidate

    big = [1e308, 1e308, -0.0, 5e-324]
    assert Candidate.model_validate({"id": "c", "params": {"x": big}}).params == {"x": big}


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


# -- hostile or malformed input: one line naming the file, the line or the field ----------------

def one_line(message: str) -> str:
    assert "\n" not in message and "<unicode string>" not in message, message
    return message


@pytest.mark.parametrize(("content", "reason"), [
    (GOOD.encode("utf-16"), "it looks like UTF-16"),
    (GOOD.replace("c2", "caf\u00e9").encode("latin-1"), "byte 0xe9"),
    (bytes(range(256)) * 4, "byte 0x80"),
])
def test_a_spec_that_is_not_utf8_is_one_line(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "spec.yaml"
    path.write_bytes(content)
    message = one_line(error_of(path))
    assert message.startswith(f"{path}: line ") and "not UTF-8" in message and reason in message


def test_a_population_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "pop.jsonl").write_bytes(b'{"id": "a"}\n{"id": "caf\xe9"}\n')
    text = "evaluator: zdt1\nobjectives: {f1: min}\ncandidates_file: pop.jsonl\n"
    message = one_line(error_of(write(tmp_path, text)))
    assert "pop.jsonl: line 2: not UTF-8 text (byte 0xe9" in message


def alias_bomb(levels: int = 9) -> str:
    """A "billion laughs": each level's list repeats the level below ten times."""
    lines = ["evaluator: zdt1", "objectives: {f1: min}", "l0: &l0 [lol, lol, lol, lol, lol]"]
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 10) + "]")
    lines.append(f"candidates:\n  - {{id: a, params: {{x: *l{levels - 1}}}}}")
    return "\n".join(lines) + "\n"


def test_a_yaml_alias_bomb_is_refused_before_it_expands(tmp_path: Path) -> None:
    path = write(tmp_path, alias_bomb())
    assert path.stat().st_size < 1000
    started = time.monotonic()
    message = one_line(error_of(path))
    assert time.monotonic() - started < 5  # expanded, it would be 5e8 strings
    assert message.startswith(f"{path}:4:") and "alias bomb" in message


def test_yaml_aliases_that_reuse_values_still_load(tmp_path: Path) -> None:
    text = GOOD.replace("params: {x: [0.2, 0.5, 0.9]}", "params: *defaults").replace(
        "params: {x: [0.1, 0.5, 0.9]}", "params: &defaults {x: [0.1, 0.5, 0.9]}"
    )
    spec = load_spec(write(tmp_path, text))
    assert spec.candidates[0].params == spec.candidates[1].params == {"x": [0.1, 0.5, 0.9]}


def test_a_recursive_yaml_alias_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("params: {x: [0.2, 0.5, 0.9]}", "params: &p {x: *p}"))
    assert "an alias refers to a node that contains it" in one_line(error_of(path))


def test_yaml_syntax_error_is_file_line_column(tmp_path: Path) -> None:
    path = write(tmp_path, "evaluator: zdt1\nobjectives: {f1: min\ncandidates: []\n")
    message = one_line(error_of(path))
    assert message.startswith(f"{path}:3:") and "malformed YAML" in message


def test_json_syntax_error_is_file_line_column(tmp_path: Path) -> None:
    path = write(tmp_path, '{"evaluator": "zdt1",\n "objectives": {"f1": "min"}\n "x": 1}', "s.json")
    assert one_line(error_of(path)).startswith(f"{path}:3:2: malformed JSON")


@pytest.mark.parametrize(("text", "expected"), [
    (GOOD + "chunksize: 4\n", "field 'chunksize': unknown field (did you mean 'chunk_size'?)"),
    (GOOD.replace("priority: high", "prio: high"),
     "candidate #0 (id 'c1'), field 'prio': unknown field (did you mean 'priority'?)"),
    (GOOD + "zzz: 1\n", "field 'zzz': unknown field (known: id, evaluator, objectives"),
])
def test_an_unknown_field_suggests_the_close_one(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in one_line(error_of(write(tmp_path, text)))


def test_an_unknown_field_in_a_population_line_suggests_the_close_one(tmp_path: Path) -> None:
    (tmp_path / "pop.jsonl").write_text('{"id": "a", "parms": {}}\n')
    text = "evaluator: zdt1\nobjectives: {f1: min}\ncandidates_file: pop.jsonl\n"
    message = error_of(write(tmp_path, text))
    assert "line 1 (id 'a'): field 'parms': unknown field (did you mean 'params'?)" in message


@pytest.mark.parametrize("text", [
    GOOD.replace("evaluator: zdt1", "evaluator: " + "x" * 5000),
    GOOD.replace("id: c2", "id: " + "y" * 5000),
    GOOD.replace("id: c1", "id: " + "z" * 250).replace("id: c2", "id: " + "z" * 250),  # duplicate
])
def test_long_bad_values_are_cut_short(tmp_path: Path, text: str) -> None:
    message = one_line(error_of(write(tmp_path, text)))
    assert len(message) < 400 and "..." in message


def test_the_same_error_in_many_candidates_is_said_once(tmp_path: Path) -> None:
    rows = "".join(f"  - {{id: c{i}, priority: urgent}}\n" for i in range(100))
    text = f"evaluator: zdt1\nobjectives: {{f1: min}}\ncandidates:\n{rows}"
    message = one_line(error_of(write(tmp_path, text)))
    assert message.count("Input should be") == 1
    assert "candidate #0 (id 'c0'), field 'priority'" in message
    assert "(and 99 more candidates like it)" in message


@pytest.mark.parametrize("bad", ["\\n", "\\e[2J", "\\0", "\\u202e", "\\t"])
def test_candidate_ids_must_be_printable(tmp_path: Path, bad: str) -> None:
    path = write(tmp_path, GOOD.replace("id: c2", f'id: "c{bad}2"'))
    message = one_line(error_of(path))
    assert "candidate #1" in message and "field 'id': must be printable text" in message


def test_printable_ids_may_hold_brackets_colons_and_any_script(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, GOOD.replace("id: c2", 'id: "v2[/bold] :smile: \u00e9\u4e2d"')))
    assert spec.candidates[1].id == "v2[/bold] :smile: \u00e9\u4e2d"


@pytest.mark.parametrize("evaluator", ["os:system", "math:log", "builtins:max", "json:dumps"])
def test_an_evaluator_that_cannot_take_candidate_and_context_is_refused(
    tmp_path: Path, evaluator: str
) -> None:
    message = one_line(error_of(write(tmp_path, GOOD.replace("zdt1", evaluator))))
    assert "field 'evaluator'" in message and f"'{evaluator}'" in message
    assert "(candidate, context)" in message


def test_a_module_function_evaluator_taking_candidate_and_context_is_accepted(
    tmp_path: Path,
) -> None:
    spec = load_spec(write(tmp_path, GOOD.replace("zdt1", "tests.sample_evaluators:by_params")))
    assert spec.evaluator == "tests.sample_evaluators:by_params"


def test_a_light_launcher_accepts_an_evaluator_whose_module_needs_a_worker_only_package() -> None:
    """The launcher may lack torch: the module's own import of it is the workers' business;
    a module that does not exist at all is still refused."""
    data = {"evaluator": "tests.worker_only_evaluator:evaluate", "objectives": {"f": "min"},
            "candidates": [{"id": "a"}]}
    assert spec_from_dict(data).evaluator == "tests.worker_only_evaluator:evaluate"
    with pytest.raises(SpecError, match="does not import"):
        spec_from_dict({**data, "evaluator": "tests.no_such_module_here:evaluate"})


@pytest.mark.timeout(30)
def test_a_device_a_fifo_without_writer_or_a_huge_spec_is_refused_without_hanging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `launch /dev/zero` read until the kernel killed it (exit 137); a FIFO nobody writes to
    # blocked forever. /dev/null is the same kind of file, and harmless if this regresses.
    with pytest.raises(SpecError, match="/dev/null: is a device or socket, not a file"):
        load_generation("/dev/null")
    fifo = tmp_path / "spec.yaml"
    os.mkfifo(fifo)
    with pytest.raises(SpecError, match="must be a mapping"):  # read as empty, at once
        load_generation(fifo)
    monkeypatch.setattr(spec_reading, "SPEC_SIZE_LIMIT", 1000)
    big = tmp_path / "big.yaml"
    big.write_text(GOOD + "#" * 1000)
    with pytest.raises(SpecError, match=r"big\.yaml: larger than"):
        load_generation(big)


def test_a_spec_from_a_pipe_with_a_writer_still_loads() -> None:
    # As `evofleet launch <(make_spec)`: the shell passes /dev/fd/N, a pipe with its writer.
    read_end, write_end = os.pipe()

    def write() -> None:
        with os.fdopen(write_end, "w") as pipe:
            pipe.write(GOOD)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        spec, _ = load_generation(f"/dev/fd/{read_end}", check_evaluator=False)
    finally:
        writer.join(timeout=30)
        os.close(read_end)
    assert spec.evaluator == "zdt1"
