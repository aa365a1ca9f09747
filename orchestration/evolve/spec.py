"""A multi-generation run's spec: algorithm, search space, evaluator, limits; loaded with one-line errors."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from orchestration.spec_loading import SpecError, spec_from_dict
from orchestration.spec_reading import numbered_lines, read_document
from workers.contract import Direction

PYMOO_ALGORITHMS = ("nsga2", "nsga3", "moead", "ga")
LIMIT_FIELDS = ("soft_time_limit", "time_limit", "deadline", "batch_size", "batch_timeout",
                "max_in_flight", "crash_retries", "chunk_size")
ZDT_FRONTS = ("zdt1", "zdt2", "zdt3", "zdt4", "zdt6")
_CLASS_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


class SearchSpace(BaseModel):
    """``n_var`` real variables sent as ``params.x``; ``low``/``high``: one number or one per variable."""

    model_config = ConfigDict(extra="forbid")

    n_var: int = Field(gt=0, description="Number of decision variables.")
    low: float | list[float] = Field(description="Lower bound(s).")
    high: float | list[float] = Field(description="Upper bound(s).")

    def bounds(self) -> tuple[list[float], list[float]]:
        """Per-variable lower and upper bounds."""
        low = self.low if isinstance(self.low, list) else [self.low] * self.n_var
        high = self.high if isinstance(self.high, list) else [self.high] * self.n_var
        return low, high

    @model_validator(mode="after")
    def _check_bounds(self) -> SearchSpace:
        for name, value in (("low", self.low), ("high", self.high)):
            values = value if isinstance(value, list) else [value]
            if isinstance(value, list) and len(value) != self.n_var:
                raise ValueError(f"search_space.{name} has {len(value)} bounds for {self.n_var} variables")
            if not all(math.isfinite(v) for v in values):
                raise ValueError(f"search_space.{name} must be finite numbers")
        low, high = self.bounds()
        for index, (lo, hi) in enumerate(zip(low, high, strict=True)):
            if not lo < hi:
                raise ValueError(f"search_space: variable {index} has low {lo} >= high {hi}")
        return self


class RunSpec(BaseModel):
    """A whole optimization: ``generations`` generations of ``population_size`` candidates."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[A-Za-z0-9._-]{1,100}$", description="The run; generations RUN-g0000, ...")
    algorithm: str = Field("nsga2", description="nsga2 | nsga3 | moead | ga, or module:Class.")
    algorithm_options: dict[str, Any] = Field(default_factory=dict,
                                              description="JSON keyword arguments to the algorithm.")
    search_space: SearchSpace | None = None
    initial_population: str | None = Field(
        None, description="JSONL of {\"x\": [...]} lines (relative to the spec): the first generation."
    )
    evaluator: str = Field(min_length=1)
    objectives: dict[str, Direction] = Field(min_length=1)
    generations: int = Field(gt=0)
    population_size: int = Field(100, gt=0)
    seed: int = 1
    failure: Literal["penalty", "exclude"] = Field(
        "penalty", description="penalty: failed candidates score `penalty` on every objective "
        "(as minimised); exclude: left out of selection.")
    penalty: float = Field(1e6, description="The penalty value (objectives as minimised).")
    reference_point: list[float] | None = Field(None, description="Hypervolume reference, per objective.")
    true_front: Literal["zdt1", "zdt2", "zdt3", "zdt4", "zdt6"] | None = Field(
        None, description="Known Pareto front for IGD (default: the evaluator's, for zdt*).")
    output: str | None = Field(None, description="Output directory (default runs/ID).")
    plot_every: int = Field(1, ge=0, description="A front PNG every N generations (0: last only).")
    # The generation spec's limits, handed to every generation.
    soft_time_limit: float = Field(300.0, gt=0)
    time_limit: float = Field(360.0, gt=0)
    deadline: float = Field(86400.0, gt=0)
    batch_size: int = Field(50, gt=0)
    batch_timeout: float = Field(0.5, gt=0)
    max_in_flight: int = Field(10000, gt=0)
    crash_retries: int = Field(1, ge=0)
    chunk_size: int | Literal["auto"] = "auto"

    @field_validator("algorithm")
    @classmethod
    def _known_algorithm(cls, value: str) -> str:
        name = value.lower() if ":" not in value else value
        if name not in PYMOO_ALGORITHMS and not _CLASS_PATH.match(value):
            known = ", ".join(PYMOO_ALGORITHMS)
            raise ValueError(f"unknown algorithm {value!r}: use {known} or module:Class")
        return name

    @field_validator("algorithm_options")
    @classmethod
    def _json_options(cls, value: dict[str, Any]) -> dict[str, Any]:
        json.dumps(value, allow_nan=False)  # only plain data: nothing in a spec is executed
        return value

    @model_validator(mode="after")
    def _consistent(self) -> RunSpec:
        n_obj = len(self.objectives)
        if self.reference_point is not None:
            if len(self.reference_point) != n_obj:
                raise ValueError(
                    f"reference_point has {len(self.reference_point)} values for {n_obj} objectives"
                )
            if not all(math.isfinite(v) for v in self.reference_point):
                raise ValueError("reference_point must be finite numbers")
        if self.true_front is not None and n_obj != 2:
            raise ValueError(f"true_front {self.true_front} has 2 objectives, the spec {n_obj}")
        if self.is_pymoo:
            if self.search_space is None and self.initial_population is None:
                raise ValueError(f"algorithm {self.algorithm} needs a search_space or an initial_population")
            if self.algorithm == "ga" and n_obj != 1:
                raise ValueError(f"algorithm ga optimizes one objective, the spec has {n_obj}; use nsga2")
            if self.algorithm == "moead" and self.failure == "exclude":
                raise ValueError("moead replaces neighbours one offspring each: use failure: penalty")
        if self.time_limit < self.soft_time_limit:
            raise ValueError(
                f"time_limit ({self.time_limit}) is below soft_time_limit ({self.soft_time_limit})"
            )
        return self

    @property
    def is_pymoo(self) -> bool:
        return self.algorithm in PYMOO_ALGORITHMS

    @property
    def front_name(self) -> str | None:
        """The ZDT problem whose true front is known, if any."""
        if self.true_front is not None:
            return self.true_front
        known = self.evaluator in ZDT_FRONTS and self.objectives == {"f1": "min", "f2": "min"}
        return self.evaluator if known else None

    def generation_id(self, index: int) -> str:
        return f"{self.id}-g{index:04d}"

    def generation_fields(self, index: int) -> dict[str, Any]:
        """A generation spec (without candidates) for generation ``index``."""
        fields = {name: getattr(self, name) for name in LIMIT_FIELDS}
        return {**fields, "id": self.generation_id(index), "evaluator": self.evaluator,
                "objectives": dict(self.objectives)}


def run_spec_from_dict(data: dict[str, Any], *, source: str = "<run spec>", base: Path | None = None,
                       check_evaluator: bool = True) -> RunSpec:
    """Validate a parsed run spec; raises SpecError with one line saying where and why."""
    try:
        spec = RunSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(f"{source}: invalid run spec: {_describe(exc)}") from None
    if spec.initial_population is not None and base is not None:
        path = (base / spec.initial_population).resolve()
        if not path.is_file():
            raise SpecError(f"{source}: field 'initial_population': {path} is not a file")
        spec = spec.model_copy(update={"initial_population": str(path)})
    # The generation spec's own checks (limits, evaluator importable), before anything is submitted.
    fields = spec.generation_fields(0)
    spec_from_dict(fields, source=source, check_evaluator=check_evaluator, allow_empty=True)
    return spec


def load_run_spec(path: str | Path, *, check_evaluator: bool = True,
                  overrides: Mapping[str, Any] | None = None) -> RunSpec:
    """Read and validate the run spec at ``path`` (YAML or JSON), with ``overrides`` (e.g. the
    command line's seed) in place of its fields; raises SpecError."""
    path = Path(path)
    data = read_document(path)
    if not isinstance(data, dict):
        raise SpecError(f"{path}: the run spec must be a mapping (YAML or JSON object)")
    data.setdefault("id", path.stem)
    data.update(overrides or {})
    return run_spec_from_dict(data, source=str(path), base=path.parent, check_evaluator=check_evaluator)


def read_initial_population(path: str | Path) -> list[list[float]]:
    """The ``x`` rows of an initial population file (JSONL of {"x": [...]}); raises SpecError."""
    rows: list[list[float]] = []
    for number, line in numbered_lines(Path(path)):
        if not line.strip():
            continue
        try:
            x = json.loads(line)["x"]
            rows.append([float(v) for v in x])
        except (ValueError, KeyError, TypeError):
            raise SpecError(f"{path}: line {number}: expected {{\"x\": [numbers]}}") from None
    if not rows or len({len(r) for r in rows}) != 1:
        raise SpecError(f"{path}: needs at least one row, all of the same length")
    return rows


def _describe(exc: ValidationError) -> str:
    """pydantic's errors in one line: "field 'a.b': message; ..." (the first three)."""
    problems = []
    for error in exc.errors()[:3]:
        where = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        problems.append(f"field '{where}': {message}" if where else message)
    more = len(exc.errors()) - 3
    return "; ".join(problems) + (f" (and {more} more)" if more > 0 else "")
