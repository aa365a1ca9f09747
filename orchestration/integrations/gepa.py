"""GEPA on the fleet: an adapter whose evaluations run the user's own adapter on the workers."""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from gepa.core.adapter import EvaluationBatch

from orchestration.api import launch_and_collect
from orchestration.integrations.executor import EvaluationFailed, FleetExecutor
from orchestration.integrations.fleet import fleet, spec_fields
from orchestration.settings import LaunchSettings
from workers.contract import Candidate, EvaluationResult, GenerationSpec, Status
from workers.evaluators.call import to_json
from workers.evaluators.gepa_adapter import load_adapter
from workers.outputs import load_outputs

logger = logging.getLogger(__name__)

DEFAULT_OPTIONS: dict[str, Any] = {"batch_size": 500, "batch_timeout": 0.1}
Pair = tuple[dict[str, str], list[Any]]


@dataclass(frozen=True)
class FleetFailure:
    """Stands in for the output and trajectory of an example whose evaluation failed."""

    status: str
    error: str
    example: Any

    @property
    def feedback(self) -> str:
        return f"The evaluation of this example failed on the fleet ({self.status}): {self.error}"


class FleetAdapter:
    """A GEPA adapter that evaluates on the fleet with the user's adapter inside the workers.

    Failure contract (GEPA's rule): nothing per example or per candidate raises into GEPA. An
    example whose evaluation ends ``error``, ``timeout``, ``crashed`` or ``cancelled`` scores
    ``failure_score``, and its output and trajectory are a ``FleetFailure`` with the status
    and error text, which ``make_reflective_dataset`` turns into a feedback record. Only a
    systemic failure (the broker unreachable, non-JSON examples) raises.

    ``evaluate`` and ``batch_evaluate`` send every (candidate, examples) pair as candidates of
    one generation, ``examples_per_task`` examples each; examples, candidates, outputs and
    trajectories cross the wire as JSON. ``make_reflective_dataset`` and ``propose_new_texts``
    are the user's adapter's, run here. Use as a context manager (or ``close()``): with no
    broker URL it keeps one local cluster for its life.
    """

    def __init__(
        self,
        adapter: str,
        *,
        broker_url: str | None = None,
        workers: int | None = None,
        concurrency: int | None = None,
        failure_score: float = 0.0,
        examples_per_task: int = 1,
        generation_options: Mapping[str, Any] | None = None,
        settings: LaunchSettings | None = None,
    ) -> None:
        """Load ``adapter`` (``module:attr``) here too, and reach or start the fleet.

        Args:
            adapter: The user's GEPA adapter, an instance or a zero-argument factory, that
                the workers import.
            broker_url: A deployment; None (and no ``EVOFLEET_BROKER_URL``): local mode.
            workers: Local mode: worker processes.
            concurrency: Local mode: pool children per worker.
            failure_score: The score of an example whose evaluation failed.
            examples_per_task: Examples evaluated by one ``adapter.evaluate`` call on a worker
                (one crash fails them all; more per task, fewer messages).
            generation_options: GenerationSpec fields (time limits, ``crash_retries``).
            settings: Launcher settings.
        """
        if examples_per_task < 1:
            raise ValueError("FleetAdapter: examples_per_task must be >= 1")
        self.adapter_path = adapter
        self.local = load_adapter(adapter)
        self.propose_new_texts = getattr(self.local, "propose_new_texts", None)
        self.failure_score = failure_score
        self.examples_per_task = examples_per_task
        self._options = spec_fields(DEFAULT_OPTIONS, generation_options)
        self._spec()  # a bad option is an error now
        self._settings = settings
        self.failures: Counter[str] = Counter()  # status -> failed examples so far
        self.generation_ids: list[str] = []
        self._stack = ExitStack()
        self.broker_url = self._stack.enter_context(
            fleet(broker_url, settings=settings, workers=workers, concurrency=concurrency)
        )

    def close(self) -> None:
        """Stop a local cluster (nothing against a deployment)."""
        self._stack.close()

    def __enter__(self) -> FleetAdapter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- GEPA's adapter interface ---------------------------------------------------
    def evaluate(
        self, batch: list[Any], candidate: dict[str, str], capture_traces: bool = False
    ) -> EvaluationBatch[Any, Any]:
        """Evaluate ``candidate`` on ``batch`` across the fleet (one generation)."""
        return self._run([(candidate, batch)], capture_traces)[0]

    def batch_evaluate(
        self, items: Sequence[tuple[dict[str, str], list[Any]]], *, capture_traces: bool = True
    ) -> list[EvaluationBatch[Any, Any]]:
        """Evaluate every (candidate, batch) pair as one generation; traces by default, as
        GEPA's ``batch_evaluate`` contract asks."""
        return self._run([(dict(c), list(b)) for c, b in items], capture_traces)

    def make_reflective_dataset(
        self,
        candidate: dict[str, str],
        eval_batch: EvaluationBatch[Any, Any],
        components_to_update: list[str],
    ) -> dict[str, list[dict[str, Any]]]:
        """The user's reflective dataset for the examples that ran, plus one record per failed
        example (its inputs and the failure as feedback) for each component."""
        trajectories = eval_batch.trajectories or [None] * len(eval_batch.outputs)
        kept = [i for i, t in enumerate(trajectories) if not isinstance(t, FleetFailure)]
        dataset: dict[str, list[dict[str, Any]]] = {name: [] for name in components_to_update}
        if kept:
            ran = EvaluationBatch(
                outputs=[eval_batch.outputs[i] for i in kept],
                scores=[eval_batch.scores[i] for i in kept],
                trajectories=[trajectories[i] for i in kept] if eval_batch.trajectories else None,
                objective_scores=(
                    [eval_batch.objective_scores[i] for i in kept]
                    if eval_batch.objective_scores else None
                ),
            )
            own = self.local.make_reflective_dataset(candidate, ran, components_to_update)
            for name, records in own.items():
                dataset[name] = list(records)
        for failure in trajectories:
            if isinstance(failure, FleetFailure):
                for records in dataset.values():
                    records.append({"Inputs": failure.example, "Generated Outputs": None,
                                    "Feedback": failure.feedback})
        return dataset

    # -- internals ------------------------------------------------------------------
    def _spec(self) -> GenerationSpec:
        return GenerationSpec(evaluator="gepa", objectives={"score": "max"}, **self._options)

    def _run(self, items: list[Pair], capture_traces: bool) -> list[EvaluationBatch[Any, Any]]:
        tasks: dict[str, tuple[int, list[Any]]] = {}  # candidate id -> (pair, its examples)
        candidates = []
        for index, (candidate, batch) in enumerate(items):
            for start in range(0, len(batch), self.examples_per_task):
                examples = batch[start : start + self.examples_per_task]
                task_id = f"{index}-{start}"
                tasks[task_id] = (index, examples)
                candidates.append(Candidate(id=task_id, params={
                    "adapter": self.adapter_path,
                    "candidate": to_json(candidate, "candidate"),
                    "batch": to_json(examples, "batch"),
                    "capture_traces": capture_traces,
                }))
        results: dict[str, EvaluationResult] = {}
        if candidates:
            spec = self._spec()
            self.generation_ids.append(spec.id)
            results = {result.candidate_id: result for result in launch_and_collect(
                spec, candidates, broker_url=self.broker_url, settings=self._settings)}
        parts: list[list[tuple[Any, float, Any, Any]]] = [[] for _ in items]
        for task_id, (index, examples) in tasks.items():
            parts[index] += self._examples(results.get(task_id), examples)
        return [self._batch(part, capture_traces) for part in parts]

    def _examples(
        self, result: EvaluationResult | None, examples: list[Any]
    ) -> list[tuple[Any, float, Any, Any]]:
        """(output, score, trajectory, objective scores) per example of one task."""
        if result is not None and result.status is Status.ok:
            try:
                data = load_outputs(result)
                trajectories = data["trajectories"] or [None] * len(examples)
                objective = data["objective_scores"] or [None] * len(examples)
                return list(zip(data["outputs"], data["scores"], trajectories, objective, strict=True))
            except Exception as exc:  # stored outputs unreadable: a failure like any other
                failure = FleetFailure("error", f"{type(exc).__name__}: {exc}", None)
        else:
            status = result.status.value if result is not None else "missing"
            error = result.error if result is not None else None
            text = f"{error.type}: {error.message}" if error is not None else status
            failure = FleetFailure(status, text, None)
        self.failures[failure.status] += len(examples)
        logger.warning("GEPA evaluation of %d example(s) failed: %s", len(examples), failure.error)
        return [
            (FleetFailure(failure.status, failure.error, example), self.failure_score,
             FleetFailure(failure.status, failure.error, example), None)
            for example in examples
        ]

    @staticmethod
    def _batch(part: list[tuple[Any, float, Any, Any]], capture_traces: bool) -> EvaluationBatch[Any, Any]:
        objective = [entry[3] for entry in part]
        return EvaluationBatch(
            outputs=[entry[0] for entry in part],
            scores=[float(entry[1]) if math.isfinite(entry[1]) else 0.0 for entry in part],
            trajectories=[entry[2] for entry in part] if capture_traces else None,
            objective_scores=objective if objective and all(o is not None for o in objective) else None,
        )


def fleet_batch_evaluator(
    evaluator: Callable[..., Any], executor: FleetExecutor, *, failure_score: float = 0.0
) -> Callable[[list[tuple[Any, Any]]], list[tuple[float, dict[str, Any]]]]:
    """A ``batch_evaluator`` for ``gepa.optimize_anything``: all pairs one generation.

    Failure contract: a pair whose call ends ``error``, ``timeout``, ``crashed`` or
    ``cancelled`` becomes ``(failure_score, {"error": ..., "status": ...})``; nothing raises
    into GEPA for one pair.

    Args:
        evaluator: Your module-level ``evaluator(candidate, example) -> score | (score,
            side_info)``, run on the workers (candidate, example and side_info are JSON).
        executor: The FleetExecutor whose fleet runs it.
        failure_score: The score of a pair whose evaluation failed.
    """

    def evaluate_pairs(pairs: list[tuple[Any, Any]]) -> list[tuple[float, dict[str, Any]]]:
        futures = executor.submit_batch(evaluator, [list(pair) for pair in pairs])
        scored = []
        for future in futures:
            try:
                scored.append(_score_pair(future.result()))
            except EvaluationFailed as failed:
                error = failed.result.error
                text = f"{error.type}: {error.message}" if error is not None else failed.status.value
                scored.append((failure_score, {"error": text, "status": failed.status.value}))
            except (TypeError, ValueError) as exc:  # the evaluator returned something else
                scored.append((failure_score, {"error": f"{type(exc).__name__}: {exc}",
                                               "status": "error"}))
        return scored

    return evaluate_pairs


def _score_pair(value: Any) -> tuple[float, dict[str, Any]]:
    """An evaluator's JSON return value as ``(score, side_info)``."""
    if isinstance(value, list) and len(value) == 2:  # a (score, side_info) tuple, as JSON
        return float(value[0]), dict(value[1] or {})
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value), {}
    raise TypeError(f"the evaluator must return score or (score, side_info), got {value!r}")
