"""Loading a generation spec from YAML or JSON, with errors that name the file, candidate and field."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from workers.contract import Candidate, GenerationSpec
from workers.evaluators import UnknownEvaluator, resolve


class SpecError(ValueError):
    """The spec is invalid; the message says where and why, in one paragraph."""


@dataclass(frozen=True)
class CandidateFile:
    """A JSONL population, validated once in full, then streamed: never held in memory."""

    path: Path
    count: int

    def __iter__(self) -> Iterator[Candidate]:
        with self.path.open() as lines:
            for line in lines:
                if line.strip():
                    yield Candidate.model_validate_json(line)


def load_generation(
    path: str | Path, *, check_evaluator: bool = True
) -> tuple[GenerationSpec, Iterable[Candidate]]:
    """Read and validate the spec at ``path``; raises SpecError.

    Returns the spec and its population. A ``.jsonl`` ``candidates_file`` is checked line by
    line here and comes back as a CandidateFile to stream into Redis (the spec's own
    ``candidates`` is then empty); otherwise the population is the spec's list.
    """
    path = Path(path)
    data = _read_document(path)
    if not isinstance(data, dict):
        raise SpecError(f"{path}: the spec must be a mapping (YAML or JSON object)")
    candidates_file = data.pop("candidates_file", None)
    if candidates_file is None:
        spec = spec_from_dict(data, source=str(path), check_evaluator=check_evaluator)
        return spec, spec.candidates
    if "candidates" in data:
        raise SpecError(f"{path}: give either candidates or candidates_file, not both")
    population = path.parent / str(candidates_file)
    if not population.is_file():
        what = "is not a file" if population.exists() else "does not exist"
        raise SpecError(f"{path}: field 'candidates_file': {population} {what}")
    if population.suffix != ".jsonl":
        data["candidates"] = _read_candidate_list(population)
        spec = spec_from_dict(data, source=str(path), check_evaluator=check_evaluator)
        return spec, spec.candidates
    source = CandidateFile(population, _check_candidate_lines(population))
    spec = spec_from_dict(data, source=str(path), check_evaluator=check_evaluator,
                          allow_empty=True)
    return spec, source


def load_spec(path: str | Path, *, check_evaluator: bool = True) -> GenerationSpec:
    """Read and validate the spec at ``path`` with its whole population in memory."""
    spec, population = load_generation(path, check_evaluator=check_evaluator)
    if isinstance(population, CandidateFile):
        spec = spec.model_copy(update={"candidates": list(population)})
    return spec


def spec_from_dict(
    data: dict[str, Any],
    *,
    source: str = "<spec>",
    check_evaluator: bool = True,
    allow_empty: bool = False,
) -> GenerationSpec:
    """Validate an already parsed spec; raises SpecError."""
    try:
        spec = GenerationSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_describe(exc, data, source)) from None
    if not spec.candidates and not allow_empty:
        raise SpecError(f"{source}: the generation has no candidates")
    if check_evaluator:
        try:
            resolve(spec.evaluator)
        except UnknownEvaluator as exc:
            raise SpecError(f"{source}: field 'evaluator': {exc}") from None
    return spec


def _check_candidate_lines(path: Path) -> int:
    """Validate every line of a JSONL population (ids unique); return how many there are."""
    seen: set[str] = set()
    with path.open() as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                candidate = Candidate.model_validate_json(line)
            except ValidationError as exc:
                raise SpecError(_describe_line(exc, line, path, number)) from None
            if candidate.id in seen:
                raise SpecError(f"{path}: line {number}: duplicate candidate id {candidate.id!r}")
            seen.add(candidate.id)
    if not seen:
        raise SpecError(f"{path}: the generation has no candidates")
    return len(seen)


def _describe_line(exc: ValidationError, line: str, path: Path, number: int) -> str:
    try:
        candidate_id = json.loads(line).get("id")
    except (json.JSONDecodeError, AttributeError):
        return f"{path}: line {number} is not a JSON object"
    where = f"line {number}" + (f" (id {candidate_id!r})" if candidate_id else "")
    problems = [
        f"field '{'.'.join(str(p) for p in error['loc']) or 'candidate'}': {_message(error)}"
        for error in exc.errors()[:5]
    ]
    return f"{path}: {where}: " + "; ".join(problems)


def _read_document(path: Path) -> Any:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot be read ({exc.strerror})") from None
    try:
        if path.suffix == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise SpecError(f"{path}: malformed {path.suffix.lstrip('.').upper() or 'YAML'}: {exc}") from None


def _read_candidate_list(path: Path) -> list[Any]:
    """Candidates from a YAML or JSON file holding a list."""
    data = _read_document(path)
    if not isinstance(data, list):
        raise SpecError(f"{path}: a candidates file holds a list of candidates")
    return data


def _message(error: Any) -> str:
    """pydantic's message without the "Value error, " its validators' messages carry."""
    return str(error["msg"]).removeprefix("Value error, ")


def _describe(exc: ValidationError, data: dict[str, Any], source: str) -> str:
    problems = []
    for error in exc.errors()[:5]:
        location = list(error["loc"])
        where = _where(location, data)
        problems.append(f"{where}: {_message(error)}")
    more = len(exc.errors()) - 5
    suffix = f" (and {more} more)" if more > 0 else ""
    return f"{source}: invalid spec: " + "; ".join(problems) + suffix


def _where(location: list[Any], data: dict[str, Any]) -> str:
    if len(location) >= 2 and location[0] == "candidates" and isinstance(location[1], int):
        index = location[1]
        candidates = data.get("candidates") or []
        candidate_id = None
        if index < len(candidates) and isinstance(candidates[index], dict):
            candidate_id = candidates[index].get("id")
        name = f"candidate #{index}" + (f" (id {candidate_id!r})" if candidate_id else "")
        field = ".".join(str(p) for p in location[2:]) or "candidate"
        return f"{name}, field '{field}'"
    if not location:
        return "spec"
    return "field '" + ".".join(str(p) for p in location) + "'"
