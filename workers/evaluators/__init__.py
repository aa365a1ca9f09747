"""Evaluator registry: entry points in ``evofleet.evaluators``, or an explicit ``module:function``."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points
from typing import Any, Protocol

from workers.contract import Candidate

ENTRY_POINT_GROUP = "evofleet.evaluators"

Scores = Mapping[str, float]


@dataclass
class EvaluationContext:
    """What an evaluator is told besides the candidate."""

    device: Any  # a torch.device; Any keeps torch out of the launcher's imports
    generation_id: str
    objectives: Mapping[str, str]
    worker: str
    attempt: int = 1
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("evofleet.evaluator"))
    attached: Evaluation | None = None
    on_attach: Callable[[Evaluation], None] | None = field(default=None, repr=False)

    def attach(
        self,
        *,
        outputs: Any = None,
        feedback: str | None = None,
        artifacts: Mapping[str, Any] | None = None,
    ) -> None:
        """Attach outputs, feedback or artifacts as the evaluation goes.

        What the evaluator returns (or raises with) is added to them, field by field. A
        candidate that then raises or times out keeps them; one whose pool child dies
        (``crashed``, or a hard time limit) keeps the outputs and feedback attached last
        (they are recorded in Redis at once; artifacts are written only at the end).
        """
        held = self.attached or Evaluation()
        if outputs is not None:
            held.outputs = outputs
        if feedback is not None:
            held.feedback = feedback
        if artifacts:
            held.artifacts = {**held.artifacts, **artifacts}
        self.attached = held
        if self.on_attach is not None:
            self.on_attach(held)


@dataclass
class Evaluation:
    """What an evaluator may return instead of plain ``{objective: float}`` scores.

    ``outputs`` is any JSON (generated text, per-example scores, a trace); ``feedback`` is text
    for a reflecting optimizer; ``artifacts`` maps a name to bytes, str, a file path, a torch
    tensor or a dict of tensors, or a numpy array, stored out of band (never pickled).
    A mapping is read as an Evaluation when it has a ``scores`` key holding a mapping or a
    number and no keys other than ``scores``, ``outputs``, ``feedback`` and ``artifacts``;
    any other mapping is plain scores.
    """

    scores: Mapping[str, float] | float = field(default_factory=dict)
    outputs: Any = None
    feedback: str | None = None
    artifacts: Mapping[str, Any] = field(default_factory=dict)


class EvaluationError(Exception):
    """Raised by an evaluator to fail a candidate (``error``) while keeping partial outputs.

    Any exception with ``evofleet_outputs``, ``evofleet_feedback`` or ``evofleet_artifacts``
    attributes is read the same way.
    """

    def __init__(
        self,
        message: str,
        *,
        outputs: Any = None,
        feedback: str | None = None,
        artifacts: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.evofleet_outputs = outputs
        self.evofleet_feedback = feedback
        self.evofleet_artifacts = dict(artifacts or {})


class Evaluator(Protocol):
    """``(candidate, context) -> {objective: float}`` or an Evaluation; may also offer
    ``evaluate_batch`` (candidates, context) -> one of those per candidate."""

    def __call__(self, candidate: Candidate, context: EvaluationContext) -> Scores | Evaluation: ...


BatchEvaluator = Callable[[Sequence[Candidate], EvaluationContext], Sequence[Any]]


class UnknownEvaluator(LookupError):
    """The name is neither registered nor an importable ``module:function``."""


def registered() -> dict[str, str]:
    """Registered evaluator names -> their ``module:attr`` targets."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


@cache
def resolve(name: str) -> Evaluator:
    """The evaluator a spec names; raises UnknownEvaluator with the reason."""
    target = registered().get(name)
    if target is None:
        if ":" not in name:
            known = ", ".join(sorted(registered())) or "none"
            raise UnknownEvaluator(
                f"unknown evaluator {name!r}: not registered (known: {known}) and not module:function"
            )
        target = name
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise UnknownEvaluator(
            f"evaluator {name!r}: module {module_name!r} does not import ({type(exc).__name__}: {exc})"
        ) from exc
    function: Any = module
    for part in attr.split("."):
        function = getattr(function, part, None)
        if function is None:
            raise UnknownEvaluator(f"evaluator {name!r}: {module_name!r} has no attribute {attr!r}")
    if not callable(function):
        raise UnknownEvaluator(f"evaluator {name!r}: {target!r} is not callable")
    return function


def batch_function(evaluator: Evaluator) -> BatchEvaluator | None:
    """The evaluator's ``evaluate_batch``, when it offers one."""
    return getattr(evaluator, "evaluate_batch", None)
