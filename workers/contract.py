"""The contract between the launching side and the workers: what crosses the wire, as JSON."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import to_json

PRIORITIES: tuple[str, ...] = ("critical", "high", "normal", "low")
"""Queue names, highest first: the order a worker's ``-Q`` list must give them in."""


class Priority(StrEnum):
    """A candidate's priority, which is also the name of the queue it is routed to."""

    critical = "critical"
    high = "high"
    normal = "normal"
    low = "low"


class Status(StrEnum):
    """How a candidate's evaluation ended."""

    ok = "ok"
    error = "error"
    timeout = "timeout"
    crashed = "crashed"
    cancelled = "cancelled"


def utc_now() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


def from_timestamp(timestamp: float) -> datetime:
    """A POSIX timestamp as an aware UTC datetime."""
    return datetime.fromtimestamp(timestamp, UTC)


_JSON_SCALARS = (int, type(None))


def _text_problem(text: str, path: str) -> str | None:
    """A lone surrogate (a JSON "\\ud800" escape read alone) has no UTF-8 form to store."""
    if text.isascii():
        return None
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        return f"{path} is not UTF-8 text: it holds a lone surrogate U+{ord(text[exc.start]):04X}"
    return None


def json_problem(value: Any, path: str) -> str | None:
    """Why ``value`` does not survive a JSON round trip unchanged (None: it does)."""
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path} is {value}"
    if isinstance(value, str):
        return _text_problem(value, path)
    if isinstance(value, _JSON_SCALARS):
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path} has a key that is not a string: {key!r}"
            if problem := _text_problem(key, f"{path} key"):
                return problem
            if type(item) is not float or not math.isfinite(item):
                problem = json_problem(item, f"{path}.{key}")
                if problem:
                    return problem
        return None
    if isinstance(value, (list, tuple)):
        return _items_problem(value, path)
    return f"{path} is a {type(value).__name__}"


def _items_problem(value: list[Any] | tuple[Any, ...], path: str) -> str | None:
    # A vector of finite floats (the common params) is checked in C; the loop names a problem.
    if set(map(type, value)) == {float} and math.isfinite(sum(value)):
        return None
    for index, item in enumerate(value):
        if type(item) is not float or not math.isfinite(item):
            problem = json_problem(item, f"{path}[{index}]")
            if problem:
                return problem
    return None


class Candidate(BaseModel):
    """One member of a population: what an evaluator scores."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=256, description="Unique within its generation.")
    params: dict[str, Any] = Field(default_factory=dict, description="A JSON object.")
    priority: Priority = Priority.normal
    metadata: dict[str, Any] | None = None

    @field_validator("id")
    @classmethod
    def _printable_id(cls, value: str) -> str:
        # Ids reach terminals, CSV cells and logs: a newline, ESC or NUL there corrupts them.
        if not value.isprintable():
            bad = next(c for c in value if not c.isprintable())
            raise ValueError(f"must be printable text: it contains {bad!r} (U+{ord(bad):04X})")
        return value

    @field_validator("params", "metadata")
    @classmethod
    def _plain_json(cls, value: dict[str, Any] | None, info: ValidationInfo) -> dict[str, Any] | None:
        # Otherwise NaN would reach the evaluator as null, and a YAML date as a string.
        problem = json_problem(value, info.field_name or "")
        if problem:
            raise ValueError(f"must be plain JSON: {problem}")
        return value


ECHO_LIMIT_BYTES = 64 * 1024
"""A candidate's ``params`` (or ``metadata``) whose JSON is larger is not echoed in its result."""


def json_size(value: Any) -> int:
    """Bytes of ``value`` as compact UTF-8 JSON, as a result stores it (pydantic's serializer)."""
    return len(to_json(value))


def candidate_echo(candidate: Candidate) -> dict[str, Any]:
    """The ``params`` and ``metadata`` a result echoes: each one as given, or None when absent
    or when its JSON exceeds ``ECHO_LIMIT_BYTES`` (the candidate's own copy stays in Redis)."""
    echoed: dict[str, Any] = {}
    for name in ("params", "metadata"):
        value = getattr(candidate, name)
        small = value is not None and json_size(value) <= ECHO_LIMIT_BYTES
        echoed[name] = value if small else None
    return echoed


class ErrorInfo(BaseModel):
    """Why a candidate did not end ``ok``."""

    type: str
    message: str = ""
    exitcode: int | None = None
    signal: str | None = None
    traceback: str | None = Field(None, description="The evaluator's traceback, bounded.")


class ArtifactRef(BaseModel):
    """Where an artifact an evaluator attached to its result was stored."""

    uri: str = Field(description="fsspec URL of the stored object.")
    size: int = Field(ge=0, description="Bytes stored.")
    sha256: str = Field(description="Hex digest of the stored bytes.")
    media_type: str = Field(description="e.g. application/octet-stream, application/safetensors.")


class EvaluationResult(BaseModel):
    """The one result a generation records for a candidate."""

    generation_id: str
    candidate_id: str
    status: Status
    # JSON has no NaN or infinity (pydantic would write null, which cannot be read back).
    scores: dict[str, FiniteFloat] = Field(default_factory=dict)
    error: ErrorInfo | None = None
    attempts: int = 0
    worker: str | None = None
    device: str | None = None
    priority: Priority = Priority.normal
    submitted_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    params: dict[str, Any] | None = Field(None, description="The candidate's params, echoed.")
    metadata: dict[str, Any] | None = Field(None, description="The candidate's metadata, echoed.")
    outputs: Any = Field(None, description="Any JSON the evaluator attached (text, traces).")
    feedback: str | None = Field(None, description="Text for a reflecting optimizer.")
    artifacts: dict[str, ArtifactRef] = Field(
        default_factory=dict, description="Name -> where the evaluator's artifact was stored."
    )

    @property
    def eval_seconds(self) -> float | None:
        """Seconds from start to finish, when both are known."""
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


Direction = Literal["max", "min"]


class GenerationSpec(BaseModel):
    """A whole generation: what to evaluate, how, and within which limits."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(
        default_factory=lambda: f"gen-{uuid.uuid4().hex[:12]}",
        pattern=r"^[A-Za-z0-9._-]{1,128}$",
        description="Names the generation's Redis keys; generated when absent.",
    )
    evaluator: str = Field(min_length=1, description="A registered name or module:function.")
    objectives: dict[str, Direction] = Field(min_length=1, description="Objective -> max|min.")
    candidates: list[Candidate] = Field(default_factory=list)
    soft_time_limit: float = Field(300.0, gt=0, description="Seconds per candidate, catchable.")
    time_limit: float = Field(360.0, gt=0, description="Hard seconds per candidate: the child is killed.")
    deadline: float = Field(86400.0, gt=0, description="Seconds for the whole generation.")
    batch_size: int = Field(50, gt=0, description="Results per batch handed to the sinks.")
    batch_timeout: float = Field(2.0, gt=0, description="Seconds before a partial batch is flushed.")
    max_in_flight: int = Field(10000, gt=0, description="Candidates queued at once, at most.")
    crash_retries: int = Field(1, ge=0, description="Re-runs after a lost worker before `crashed`.")
    chunk_size: int | Literal["auto"] = Field(
        1, description="Candidates per Celery message (same priority), or auto."
    )
    artifact_store: str | None = Field(
        None,
        description="fsspec URL (or a path) where the evaluator's artifacts are written; "
        "default: the workers' EVOFLEET_ARTIFACT_STORE (local mode: beside the results file).",
    )

    @field_validator("artifact_store")
    @classmethod
    def _store_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from workers.artifacts import as_store_url, check_store_url

        return check_store_url(as_store_url(value))

    @field_validator("chunk_size")
    @classmethod
    def _positive_chunk(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("chunk_size must be a positive integer or 'auto'")
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> GenerationSpec:
        if self.time_limit < self.soft_time_limit:
            raise ValueError(
                f"time_limit ({self.time_limit}) must not be below soft_time_limit "
                f"({self.soft_time_limit})"
            )
        seen: set[str] = set()
        for index, candidate in enumerate(self.candidates):
            if candidate.id in seen:
                raise ValueError(f"duplicate candidate id {candidate.id!r} (candidate #{index})")
            seen.add(candidate.id)
        return self

    def header(self) -> dict[str, Any]:
        """The spec without its candidates: what workers need to evaluate one."""
        return self.model_dump(mode="json", exclude={"candidates"})


class GenerationHeader(BaseModel):
    """The part of a spec a worker reads from the ledger (no candidates)."""

    id: str
    evaluator: str
    objectives: dict[str, Direction]
    soft_time_limit: float
    time_limit: float
    crash_retries: int
    deadline: float = math.inf
    artifact_store: str | None = None

    model_config = ConfigDict(extra="ignore")
