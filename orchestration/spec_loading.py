"""Loading a generation spec from YAML or JSON, with errors that name the file, candidate and field."""

from __future__ import annotations

import difflib
import inspect
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from orchestration.messages import clip_repr, printable
from orchestration.spec_reading import SpecError as SpecError
from orchestration.spec_reading import numbered_lines, read_document
from workers.contract import Candidate, GenerationSpec
from workers.evaluators import UnknownEvaluator, registered, resolve

MESSAGE_LIMIT = 200  # characters of one validation message (a validator may echo a value)
SHOWN_PROBLEMS = 5
SPEC_FIELDS = (*GenerationSpec.model_fields, "candidates_file")
CANDIDATE_FIELDS = tuple(Candidate.model_fields)


@dataclass(frozen=True)
class CandidateFile:
    """A JSONL population, validated once in full, then streamed: never held in memory."""

    path: Path
    count: int

    def __iter__(self) -> Iterator[Candidate]:
        for _, line in numbered_lines(self.path):
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
    data = read_document(path)
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
        raise SpecError(f"{path}: field 'candidates_file': {printable(population)} {what}")
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
            function = resolve(spec.evaluator)
        except UnknownEvaluator as exc:
            if _needs_worker_package(spec.evaluator, exc):
                return spec  # a light launcher lacks torch, say: the workers have it and check
            message = str(exc).replace(repr(spec.evaluator), clip_repr(spec.evaluator))
            raise SpecError(f"{source}: field 'evaluator': {printable(message, 300)}") from None
        problem = _call_problem(spec.evaluator, function)
        if problem:
            raise SpecError(f"{source}: field 'evaluator': {problem}")
    return spec


def _needs_worker_package(name: str, exc: UnknownEvaluator) -> bool:
    """The evaluator's module exists but imports a package this launcher does not have."""
    missing = exc.__cause__
    if not isinstance(missing, ModuleNotFoundError) or not missing.name:
        return False
    module = registered().get(name, name).partition(":")[0]
    parts = module.split(".")
    # The named module (or a package above it) missing is a wrong name, not a worker-only need.
    return missing.name not in {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


def _call_problem(name: str, function: Callable[..., Any]) -> str | None:
    """Why ``function`` cannot be an evaluator, called as ``(candidate, context)`` (None: it can).

    A spec may name any importable callable (``os:system``): refused here, at launch, rather
    than as an error result for every candidate.
    """
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # a builtin without a signature: trusted only if registered
        if name in registered():
            return None
        return (f"{clip_repr(name)} cannot be checked to take (candidate, context); an evaluator "
                "is a Python function evaluator(candidate, context)")
    try:
        signature.bind(None, None)
    except TypeError as exc:
        return f"{clip_repr(name)} cannot be called as evaluator(candidate, context): {exc}"
    return None


def _check_candidate_lines(path: Path) -> int:
    """Validate every line of a JSONL population (ids unique); return how many there are."""
    seen: set[str] = set()
    for number, line in numbered_lines(path):
        if not line.strip():
            continue
        try:
            candidate = Candidate.model_validate_json(line)
        except ValidationError as exc:
            raise SpecError(_describe_line(exc, line, path, number)) from None
        if candidate.id in seen:
            raise SpecError(f"{path}: line {number}: duplicate candidate id {clip_repr(candidate.id)}")
        seen.add(candidate.id)
    if not seen:
        raise SpecError(f"{path}: the generation has no candidates")
    return len(seen)


def _describe_line(exc: ValidationError, line: str, path: Path, number: int) -> str:
    try:
        candidate_id = json.loads(line).get("id")
    except (json.JSONDecodeError, AttributeError, RecursionError):
        return f"{path}: line {number} is not a JSON object"
    where = f"{path}: line {number}" + (f" (id {clip_repr(candidate_id)})" if candidate_id else "")
    problems = [
        f"field '{'.'.join(str(p) for p in error['loc']) or 'candidate'}': "
        f"{_message(error, CANDIDATE_FIELDS)}"
        for error in exc.errors()[:SHOWN_PROBLEMS]
    ]
    return f"{where}: " + "; ".join(problems)


def _read_candidate_list(path: Path) -> list[Any]:
    """Candidates from a YAML or JSON file holding a list."""
    data = read_document(path)
    if not isinstance(data, list):
        raise SpecError(f"{path}: a candidates file holds a list of candidates")
    return data


def _message(error: Any, fields: Iterable[str]) -> str:
    """pydantic's message, short, without the "Value error, " its validators' messages carry;
    an unknown field gets the closest known name (``chunksize``: did you mean ``chunk_size``?)."""
    if error["type"] == "extra_forbidden" and error["loc"]:
        name = str(error["loc"][-1])
        close = difflib.get_close_matches(name, list(fields), n=1, cutoff=0.6)
        if close:
            return f"unknown field (did you mean '{close[0]}'?)"
        return "unknown field (known: " + ", ".join(fields) + ")"
    return printable(str(error["msg"]).removeprefix("Value error, "), MESSAGE_LIMIT)


def _describe(exc: ValidationError, data: dict[str, Any], source: str) -> str:
    """The problems, identical ones (the same field wrong in many candidates) said once."""
    groups: dict[tuple[Any, ...], list[str]] = {}  # (field, message) -> where, in order
    for error in exc.errors():
        location = list(error["loc"])
        in_candidate = len(location) >= 2 and isinstance(location[1], int)
        fields = CANDIDATE_FIELDS if in_candidate and len(location) == 3 else SPEC_FIELDS
        message = _message(error, fields)
        field = tuple(location[:1] + location[2:]) if in_candidate else tuple(location)
        groups.setdefault((field, message), []).append(_where(location, data))
    problems = []
    for (_, message), places in list(groups.items())[:SHOWN_PROBLEMS]:
        like_it = len(places) - 1
        more = f" (and {like_it} more candidates like it)" if like_it else ""
        problems.append(f"{places[0]}: {message}{more}")
    hidden = len(groups) - SHOWN_PROBLEMS
    suffix = f" (and {hidden} more problems)" if hidden > 0 else ""
    return f"{source}: invalid spec: " + "; ".join(problems) + suffix


def _where(location: list[Any], data: dict[str, Any]) -> str:
    if len(location) >= 2 and location[0] == "candidates" and isinstance(location[1], int):
        index = location[1]
        candidates = data.get("candidates") or []
        candidate_id = None
        if index < len(candidates) and isinstance(candidates[index], dict):
            candidate_id = candidates[index].get("id")
        name = f"candidate #{index}" + (f" (id {clip_repr(candidate_id)})" if candidate_id else "")
        field = ".".join(str(p) for p in location[2:]) or "candidate"
        return f"{name}, field '{field}'"
    if not location:
        return "spec"
    return "field '" + ".".join(str(p) for p in location) + "'"
