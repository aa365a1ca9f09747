"""What an evaluator hands back besides scores, made fit for a result: outputs and feedback
inline up to a byte limit, the rest (and every artifact) in the artifact store."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from workers.artifacts import ArtifactStore, ArtifactStoreError, read_ref
from workers.contract import ArtifactRef, EvaluationResult, json_problem, json_size
from workers.evaluators import Evaluation

EVALUATION_KEYS = frozenset({"scores", "outputs", "feedback", "artifacts"})
OUTPUTS_ARTIFACT = "outputs.json"
FEEDBACK_ARTIFACT = "feedback.txt"
ARTIFACT_MARKER = "$artifact"  # outputs == {"$artifact": "outputs.json"}: they were stored there
FEEDBACK_NOTE = "\n[feedback truncated: the full text is artifact feedback.txt]"
MAX_ARTIFACTS = 64  # per result: their references (~300 B each) are kept inline


def is_scores_like(value: Any) -> bool:
    return isinstance(value, Mapping) or (hasattr(value, "__float__") and not isinstance(value, bool))


def unpack(value: Any, attached: Evaluation | None = None) -> Evaluation:
    """An evaluator's return value as an Evaluation: an Evaluation itself, a mapping with a
    ``scores`` key (a mapping or a number) and only Evaluation keys, or plain scores; added to
    what it ``attached`` to its context, field by field."""
    if isinstance(value, Evaluation):
        returned = value
    elif (
        isinstance(value, Mapping)
        and "scores" in value
        and set(value) <= EVALUATION_KEYS
        and is_scores_like(value["scores"])
    ):
        returned = Evaluation(
            scores=value["scores"],
            outputs=value.get("outputs"),
            feedback=value.get("feedback"),
            artifacts=value.get("artifacts") or {},
        )
    else:
        returned = Evaluation(scores=value)
    if attached is None:
        return returned
    return Evaluation(
        scores=returned.scores,
        outputs=attached.outputs if returned.outputs is None else returned.outputs,
        feedback=attached.feedback if returned.feedback is None else returned.feedback,
        artifacts={**attached.artifacts, **(returned.artifacts or {})}
        if isinstance(returned.artifacts, Mapping) else returned.artifacts,
    )


def from_exception(exc: BaseException, attached: Evaluation | None) -> Evaluation | None:
    """What a failed evaluation leaves: what the exception carries (``evofleet_outputs``,
    ``evofleet_feedback``, ``evofleet_artifacts``, as EvaluationError sets them) over what the
    evaluator attached to its context before failing."""
    kept = Evaluation(
        outputs=attached.outputs if attached else None,
        feedback=attached.feedback if attached else None,
        artifacts=dict(attached.artifacts) if attached else {},
    )
    outputs = getattr(exc, "evofleet_outputs", None)
    feedback = getattr(exc, "evofleet_feedback", None)
    artifacts = getattr(exc, "evofleet_artifacts", None)
    if outputs is not None:
        kept.outputs = outputs
    if feedback is not None:
        kept.feedback = feedback
    if isinstance(artifacts, Mapping):
        kept.artifacts = {**kept.artifacts, **artifacts}
    if kept.outputs is None and kept.feedback is None and not kept.artifacts:
        return None
    return kept


@dataclass
class Kept:
    """A result's outputs, feedback and artifact references; ``problem`` says what could not be
    kept (the result then becomes an ``error``, naming it)."""

    outputs: Any = None
    feedback: str | None = None
    artifacts: dict[str, ArtifactRef] = field(default_factory=dict)
    problem: Exception | None = None

    def fields(self) -> dict[str, Any]:
        return {"outputs": self.outputs, "feedback": self.feedback, "artifacts": self.artifacts}

    def note(self, problem: Exception) -> None:
        if self.problem is None:
            self.problem = problem


class Keeper:
    """Turns an Evaluation's outputs, feedback and artifacts into what a result keeps.

    Outputs and feedback together stay inline up to ``inline_limit`` bytes; above it the
    outputs go to artifact ``outputs.json`` (``outputs`` becomes ``{"$artifact": "outputs.json"}``)
    and, if still too large, the feedback to ``feedback.txt`` (``feedback`` keeps its head).
    So a result's size is bounded whatever the evaluator returns.
    """

    def __init__(
        self,
        generation_id: str,
        store: Callable[[], ArtifactStore] | None,
        inline_limit: int,
    ) -> None:
        self.generation_id = generation_id
        self._store_factory = store
        self._store: ArtifactStore | None = None
        self.inline_limit = inline_limit

    def store(self) -> ArtifactStore:
        """The store, opened on first use (most generations never write an artifact)."""
        if self._store is None:
            if self._store_factory is None:
                raise ArtifactStoreError(
                    "no artifact store configured: set EVOFLEET_ARTIFACT_STORE on the workers "
                    "or the spec's artifact_store"
                )
            self._store = self._store_factory()
        return self._store

    def keep(self, candidate_id: str, evaluation: Evaluation | None) -> Kept:
        """Store what must go out of band and return what the result keeps inline."""
        kept = Kept()
        if evaluation is None:
            return kept
        outputs, feedback = evaluation.outputs, evaluation.feedback
        problem = json_problem(outputs, "outputs")
        if problem:
            kept.note(TypeError(f"outputs must be plain JSON: {problem}"))
            outputs = None
        if feedback is not None and not isinstance(feedback, str):
            kept.note(TypeError(f"feedback must be a str, got {type(feedback).__name__}"))
            feedback = None
        artifacts = evaluation.artifacts
        if not isinstance(artifacts, Mapping):
            kept.note(TypeError(f"artifacts must be a mapping name -> value, got "
                                f"{type(artifacts).__name__}"))
            artifacts = {}
        pending: dict[str, Any] = {}
        kept.outputs, kept.feedback = self._inline(outputs, feedback, pending)
        for name, value in artifacts.items():
            if name in (OUTPUTS_ARTIFACT, FEEDBACK_ARTIFACT) and name in pending:
                kept.note(ValueError(f"artifact name {name!r} is taken by the oversized {name}"))
                continue
            pending[name] = value
        if len(pending) > MAX_ARTIFACTS:
            kept.note(ValueError(f"{len(pending)} artifacts: at most {MAX_ARTIFACTS} per result"))
            return kept
        if pending:
            self._write(candidate_id, pending, kept)
        return kept

    def _inline(self, outputs: Any, feedback: str | None, pending: dict[str, Any]) -> tuple[Any, str | None]:
        """The inline outputs and feedback; what does not fit goes to ``pending``, the larger
        of the two first."""
        outputs_size = 0 if outputs is None else json_size(outputs)
        feedback_size = len(feedback.encode()) if feedback else 0
        if outputs_size + feedback_size <= self.inline_limit:
            return outputs, feedback
        if outputs is not None and outputs_size >= feedback_size:
            pending[OUTPUTS_ARTIFACT] = json.dumps(outputs, ensure_ascii=False).encode()
            outputs = {ARTIFACT_MARKER: OUTPUTS_ARTIFACT}
            outputs_size = json_size(outputs)
        if feedback and outputs_size + feedback_size > self.inline_limit:
            pending[FEEDBACK_ARTIFACT] = feedback
            room = max(0, (self.inline_limit - min(outputs_size, self.inline_limit // 2)) // 2
                       - len(FEEDBACK_NOTE))
            feedback = feedback.encode()[:room].decode(errors="ignore") + FEEDBACK_NOTE
            feedback_size = len(feedback.encode())
        if outputs is not None and OUTPUTS_ARTIFACT not in pending \
                and outputs_size + feedback_size > self.inline_limit:
            pending[OUTPUTS_ARTIFACT] = json.dumps(outputs, ensure_ascii=False).encode()
            outputs = {ARTIFACT_MARKER: OUTPUTS_ARTIFACT}
        return outputs, feedback

    def _write(self, candidate_id: str, pending: Mapping[str, Any], kept: Kept) -> None:
        try:
            store = self.store()
        except ArtifactStoreError as exc:
            kept.note(exc)
            self._drop_markers(kept)
            return
        for name, value in pending.items():
            try:
                kept.artifacts[name] = store.put(self.generation_id, candidate_id, name, value)
            except ArtifactStoreError as exc:  # the store itself failed: the rest would too
                kept.note(exc)
                break
            except (TypeError, ValueError, OSError) as exc:  # this value cannot be stored
                kept.note(type(exc)(f"artifact {name!r}: {exc}"))
        self._drop_markers(kept)

    @staticmethod
    def _drop_markers(kept: Kept) -> None:
        """Outputs that went nowhere must not point at an artifact that does not exist."""
        if isinstance(kept.outputs, dict) and OUTPUTS_ARTIFACT not in kept.artifacts \
                and kept.outputs.get(ARTIFACT_MARKER) == OUTPUTS_ARTIFACT:
            kept.outputs = None
        if kept.feedback and FEEDBACK_ARTIFACT not in kept.artifacts:
            kept.feedback = kept.feedback.removesuffix(FEEDBACK_NOTE)


def load_outputs(result: EvaluationResult, options: Mapping[str, Any] | None = None) -> Any:
    """A result's outputs, read from artifact ``outputs.json`` when they were too large to keep
    inline (``options``: fsspec storage options, default ``$EVOFLEET_ARTIFACT_STORE_OPTIONS``)."""
    ref = result.artifacts.get(OUTPUTS_ARTIFACT)
    if ref is not None and result.outputs == {ARTIFACT_MARKER: OUTPUTS_ARTIFACT}:
        return json.loads(read_ref(ref, options))
    return result.outputs


def load_feedback(result: EvaluationResult, options: Mapping[str, Any] | None = None) -> str | None:
    """A result's whole feedback, from artifact ``feedback.txt`` when it was truncated."""
    ref = result.artifacts.get(FEEDBACK_ARTIFACT)
    if ref is not None and result.feedback is not None and result.feedback.endswith(FEEDBACK_NOTE):
        return read_ref(ref, options).decode()
    return result.feedback
