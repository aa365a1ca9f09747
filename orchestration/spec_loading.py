"""Loading a generation spec from YAML or JSON, with errors that name the file, candidate and field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from workers.contract import GenerationSpec
from workers.evaluators import UnknownEvaluator, resolve


class SpecError(ValueError):
    """The spec is invalid; the message says where and why, in one paragraph."""


def load_spec(path: str | Path, *, check_evaluator: bool = True) -> GenerationSpec:
    """Read, validate and return the spec at ``path``; raises SpecError."""
    path = Path(path)
    data = _read_document(path)
    if not isinstance(data, dict):
        raise SpecError(f"{path}: the spec must be a mapping (YAML or JSON object)")
    candidates_file = data.pop("candidates_file", None)
    if candidates_file is not None:
        if "candidates" in data:
            raise SpecError(f"{path}: give either candidates or candidates_file, not both")
        data["candidates"] = _read_candidates(path.parent / str(candidates_file), path)
    return spec_from_dict(data, source=str(path), check_evaluator=check_evaluator)


def spec_from_dict(
    data: dict[str, Any], *, source: str = "<spec>", check_evaluator: bool = True
) -> GenerationSpec:
    """Validate an already parsed spec; raises SpecError."""
    try:
        spec = GenerationSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_describe(exc, data, source)) from None
    if not spec.candidates:
        raise SpecError(f"{source}: the generation has no candidates")
    if check_evaluator:
        try:
            resolve(spec.evaluator)
        except UnknownEvaluator as exc:
            raise SpecError(f"{source}: field 'evaluator': {exc}") from None
    return spec


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


def _read_candidates(path: Path, spec_path: Path) -> list[Any]:
    """Candidates from a JSONL file (one per line), or a YAML/JSON list."""
    if not path.is_file():
        raise SpecError(f"{spec_path}: field 'candidates_file': {path} does not exist")
    if path.suffix == ".jsonl":
        rows = []
        with path.open() as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise SpecError(f"{path}: line {number} is not JSON: {exc}") from None
        return rows
    data = _read_document(path)
    if not isinstance(data, list):
        raise SpecError(f"{path}: a candidates file holds a list of candidates")
    return data


def _describe(exc: ValidationError, data: dict[str, Any], source: str) -> str:
    problems = []
    for error in exc.errors()[:5]:
        location = list(error["loc"])
        where = _where(location, data)
        problems.append(f"{where}: {error['msg']}")
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
