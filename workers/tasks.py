"""The Celery tasks: ``evaluate`` (a chunk of candidates) and ``finalize_generation`` (chord body)."""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import time
from collections.abc import Mapping, Sequence
from functools import lru_cache, partial
from typing import Any

import redis
from billiard.exceptions import SoftTimeLimitExceeded
from celery import Task
from redis import RedisError

from workers import child_flags, devices, metrics
from workers.artifacts import ArtifactStore, ArtifactStoreError
from workers.celery_app import app
from workers.contract import (
    Candidate,
    EvaluationResult,
    GenerationHeader,
    Status,
    candidate_echo,
    from_timestamp,
    json_size,
    utc_now,
)
from workers.evaluators import (
    Evaluation,
    EvaluationContext,
    Scores,
    UnknownEvaluator,
    batch_function,
    resolve,
)
from workers.failures import EvaluateRequest, error_info, soft_time_limit, status_of
from workers.keys import EVALUATE_TASK, FINALIZE_TASK
from workers.ledger import RUNNING, Ledger
from workers.outputs import Keeper, Kept, from_exception, unpack
from workers.recent import RecentMap
from workers.redis_client import client_for
from workers.retention import register_store
from workers.summary import summarize

logger = logging.getLogger(__name__)
RECORD_RETRY_S = 2.0  # between attempts to record a finished result while Redis is away


def _ledger(generation_id: str) -> Ledger:
    return _process_ledger(generation_id, os.getpid())


@lru_cache(maxsize=64)
def _process_ledger(generation_id: str, pid: int) -> Ledger:
    """One Ledger (client and scripts) per generation and process: a forked child builds its own."""
    return Ledger(client_for(_backend_url()), generation_id)


@lru_cache(maxsize=1)
def _backend_url() -> str:
    # Read once: Celery's conf lookup of result_backend costs ~1 ms (measured), and a small
    # generation's first task in a child pays it every time.
    return str(app.conf.result_backend)


_HEADERS: RecentMap[str, GenerationHeader] = RecentMap(64)  # this process's recent headers


def _remember_header(generation_id: str, header: GenerationHeader) -> GenerationHeader:
    _HEADERS.put(generation_id, header)
    return header


@lru_cache(maxsize=16)
def _process_store(url: str, options_json: str, pid: int) -> ArtifactStore:
    """One store per URL and process: fsspec clients and the folder markers are reused."""
    return ArtifactStore(url, json.loads(options_json))


def _keeper(ledger: Ledger, header: GenerationHeader) -> Keeper:
    """Where this generation's outputs and artifacts go: the spec's store, else the worker's."""
    settings = app.conf.evofleet_settings
    url = header.artifact_store or settings.artifact_store

    def open_store() -> ArtifactStore:
        assert url is not None
        store = _process_store(url, json.dumps(settings.artifact_store_options, sort_keys=True),
                               os.getpid())
        register_store(ledger.client, header.id, url)
        return store

    return Keeper(header.id, open_store if url else None, settings.inline_output_bytes)


# ignore_result: the ledger holds every outcome; Celery's own result key would cost a Redis
# write and ~300 B kept for result_expires per message. The chord counts parts all the same.
@app.task(name=EVALUATE_TASK, bind=True, Request=EvaluateRequest, acks_late=True,
          ignore_result=True)
def evaluate(
    self: Task, generation_id: str, candidates: list[dict[str, Any]], submitted_at: float
) -> dict[str, int]:
    """Evaluate a chunk of candidates and record each one's result in the ledger.

    Never raises for a candidate's failure: the chord must count every header task as done.
    Returns only the chunk's size, the same on every delivery, so a duplicate is harmless.
    """
    ledger = _ledger(generation_id)
    chunk = [Candidate.model_validate(c) for c in candidates]
    alone = len(chunk) == 1
    known = _HEADERS.get(generation_id)
    # A generation's first task in this child reads the header in the same round trip.
    start = ledger.begin([c.id for c in chunk], count_attempts=alone, with_header=known is None)
    if start is None:  # the generation ended (deadline, cancel): skip its queued work
        return {"candidates": len(candidates)}
    header = known or _remember_header(generation_id, start.header or ledger.header())
    todo = [c for c in chunk if c.id not in start.recorded]
    context = EvaluationContext(
        device=devices.current_device(),
        generation_id=generation_id,
        objectives=header.objectives,
        worker=self.request.hostname or socket.gethostname(),
    )
    runner = ChunkRunner(ledger, header, context, from_timestamp(submitted_at), _keeper(ledger, header))
    with metrics.running(len(todo)):
        runner.run(todo, attempts=start.attempts if alone else None)
    return {"candidates": len(candidates)}


def checked_scores(scores: Scores | float, objectives: Mapping[str, str]) -> dict[str, float]:
    """An evaluator's return value as finite floats, one per objective; a bare number (a 0-d
    tensor too) is accepted when there is a single objective. Raises TypeError or ValueError
    saying why not."""
    if not isinstance(scores, Mapping):
        if len(objectives) == 1 and hasattr(scores, "__float__") and not isinstance(scores, bool):
            scores = {next(iter(objectives)): scores}
        else:
            raise TypeError(f"evaluator must return {{objective: number}}, got {type(scores).__name__}")
    try:
        clean = {str(name): float(value) for name, value in scores.items()}
    except (TypeError, ValueError) as exc:
        raise TypeError(f"scores are not numbers: {exc}") from None
    missing = [name for name in objectives if name not in clean]
    if missing:
        raise ValueError(f"no score for objective(s) {missing}")
    not_finite = {name: value for name, value in clean.items() if not math.isfinite(value)}
    if not_finite:
        raise ValueError(f"score(s) not finite: {not_finite}")
    return clean


class ChunkRunner:
    """Evaluates candidates in the pool child and records each result as it finishes."""

    def __init__(
        self,
        ledger: Ledger,
        header: GenerationHeader,
        context: EvaluationContext,
        submitted_at: Any,
        keeper: Keeper,
    ) -> None:
        self.ledger = ledger
        self.header = header
        self.context = context
        self.submitted_at = submitted_at
        self.keeper = keeper

    def run(self, candidates: Sequence[Candidate], *, attempts: dict[str, int] | None) -> None:
        """Evaluate; ``attempts`` holds a lone candidate's counted attempt (None in a chunk)."""
        try:
            evaluator = resolve(self.header.evaluator)
        except Exception as exc:  # the launcher could import it, this worker cannot
            self._record_unloadable(candidates, exc, attempts)
            return
        batch = batch_function(evaluator)
        if batch is not None and len(candidates) > 1:
            leftover = self._run_batch(batch, candidates)
        else:
            leftover = list(candidates)
        for candidate in leftover:
            attempt = attempts.get(candidate.id, 1) if attempts is not None else 1
            if attempt > self.header.crash_retries + 1:
                self._record(self._result(candidate, Status.crashed, attempt=attempt - 1, started=None,
                                          error=error_info(RuntimeError(
                                              f"lost its worker {attempt - 1} times; not run again"))))
                continue
            self.context.attempt = attempt
            self.context.attached = None
            self.context.on_attach = partial(self._note_attached, candidate)
            started = utc_now()
            try:
                with soft_time_limit(self.header.soft_time_limit):
                    value = evaluator(candidate, self.context)
                self._record(self._value_result(candidate, value, attempt, started))
            except Exception as exc:
                self._record_failure(candidate, exc, attempt, started)
                devices.after_failure(exc)
            finally:
                self.context.on_attach = None
                devices.release_memory()

    def _record_unloadable(
        self, candidates: Sequence[Candidate], exc: Exception, attempts: dict[str, int] | None
    ) -> None:
        """Record an ``error`` for each candidate: the evaluator does not load on this worker.

        Not retried: nothing routes a retry to a worker that can import it, so it could come back here.
        """
        name = self.header.evaluator
        reason = str(exc).removeprefix(f"evaluator {name!r}: ")
        if not isinstance(exc, UnknownEvaluator):
            reason = f"{type(exc).__name__}: {reason}"
        message = f"evaluator {name!r} cannot be loaded on worker {self.context.worker}: {reason}"
        logger.error("%s; recording error for %d candidate(s)", message, len(candidates))
        self._record(*(
            self._result(candidate, Status.error, started=None,
                         attempt=attempts.get(candidate.id, 1) if attempts is not None else 1,
                         error=error_info(UnknownEvaluator(message)))
            for candidate in candidates
        ))

    def _run_batch(self, batch: Any, candidates: Sequence[Candidate]) -> list[Candidate]:
        """Score all in one call; on an exception, fall back to one by one."""
        started = utc_now()
        try:
            with soft_time_limit(self.header.soft_time_limit * len(candidates)):
                all_scores = list(batch(candidates, self.context))
        except Exception as exc:
            logger.info("batch evaluation failed (%r); evaluating one by one", exc)
            return list(candidates)
        finally:
            devices.release_memory()
        self.context.attached = None  # attach() names no candidate in a batch call: not kept
        # They finished together: one round trip records them all (a result each took ~0.3 ms),
        # even those before a candidate whose result could not be built.
        results: list[EvaluationResult] = []
        try:
            for candidate, value in zip(candidates, all_scores, strict=True):
                results.append(self._value_result(candidate, value, 1, started))
        finally:
            self._record(*results)
        return []

    def _value_result(
        self, candidate: Candidate, value: Any, attempt: int, started: Any
    ) -> EvaluationResult:
        """The result of what the evaluator returned: scores, or an Evaluation (or its mapping)."""
        evaluation = unpack(value, self.context.attached)
        kept = self._keep(candidate, evaluation)
        try:
            clean = checked_scores(evaluation.scores, self.header.objectives)
            if len(clean) > 64 and json_size(clean) > self.keeper.inline_limit:
                raise ValueError(f"{len(clean)} scores exceed the inline limit "
                                 f"({self.keeper.inline_limit} bytes): give per-example scores "
                                 "in outputs")
        except (TypeError, ValueError) as problem:
            return self._result(candidate, Status.error, attempt=attempt, started=started,
                                error=error_info(problem), kept=kept)
        if kept.problem is not None:  # e.g. the store is unreachable: scored, but not kept
            return self._result(candidate, Status.error, attempt=attempt, started=started,
                                scores=clean, error=error_info(kept.problem), kept=kept)
        return self._result(candidate, Status.ok, attempt=attempt, started=started, scores=clean,
                            kept=kept)

    def _record_failure(self, candidate: Candidate, exc: Exception, attempt: int, started: Any) -> None:
        """An evaluator that raised (or ran out of time) keeps what it attached before."""
        kept = self._keep(candidate, from_exception(exc, self.context.attached))
        error = error_info(exc, with_traceback=True)
        logger.warning("generation %s: candidate %s: %s\n%s", self.header.id, candidate.id,
                       error.message, error.traceback)
        if kept.problem is not None:
            error.message = f"{error.message} (and its attachments were not kept: {kept.problem})"
        self._record(self._result(candidate, status_of(exc), attempt=attempt, started=started,
                                  error=error, kept=kept))

    def _note_attached(self, candidate: Candidate, evaluation: Evaluation) -> None:
        """Record attached outputs and feedback at once: if the pool child dies, the main
        process adds them to the ``crashed`` or ``timeout`` result."""
        try:
            kept = self.keeper.keep(candidate.id, Evaluation(outputs=evaluation.outputs,
                                                             feedback=evaluation.feedback))
            fields = kept.fields()
            fields["artifacts"] = {name: ref.model_dump() for name, ref in kept.artifacts.items()}
            self.ledger.note_attached(candidate.id, fields)
        except (RedisError, OSError, TypeError, ValueError) as exc:  # never fails the evaluation
            logger.warning("candidate %s: attached outputs not recorded yet: %s", candidate.id, exc)

    def _keep(self, candidate: Candidate, evaluation: Evaluation | None) -> Kept:
        """Outputs, feedback and artifacts, with the store's time bounded by the soft limit."""
        if evaluation is None or (
            evaluation.outputs is None and evaluation.feedback is None and not evaluation.artifacts
        ):
            return Kept()
        limit = self.header.soft_time_limit
        try:
            with soft_time_limit(limit):
                return self.keeper.keep(candidate.id, evaluation)
        except SoftTimeLimitExceeded:
            where = self.header.artifact_store or app.conf.evofleet_settings.artifact_store
            return Kept(problem=ArtifactStoreError(
                f"artifact store {where} did not finish writing within {limit:g}s"))

    def _record(self, *results: EvaluationResult) -> None:
        record_when_reachable(self.ledger, *results)

    def _result(
        self,
        candidate: Candidate,
        status: Status,
        *,
        attempt: int,
        started: Any,
        scores: dict[str, float] | None = None,
        error: Any = None,
        kept: Kept | None = None,
    ) -> EvaluationResult:
        return EvaluationResult(
            **(kept.fields() if kept is not None else {}),
            generation_id=self.header.id,
            candidate_id=candidate.id,
            status=status,
            scores=scores or {},
            error=error,
            attempts=attempt,
            worker=self.context.worker,
            device=str(self.context.device),
            priority=candidate.priority,
            submitted_at=self.submitted_at,
            started_at=started,
            finished_at=utc_now(),
            **candidate_echo(candidate),
        )


def record_when_reachable(ledger: Ledger, *results: EvaluationResult) -> None:
    """Record ``results``, waiting out a Redis that cannot be reached (a partition, a restart).

    Unreachable Redis is not the candidate's failure: when the client's own retries ran out,
    the result used to fall into the evaluator's ``except`` and be recorded as an ``error``
    (ConnectionError) once Redis was back. The first result wins, so if another node re-ran
    the candidate meanwhile (past the visibility timeout), this one is dropped. The task's
    hard time limit still bounds the wait; the flag tells the main process that the child
    holds finished results, so it waits a moment for them (else re-queues the task) instead
    of recording ``timeout``.
    """
    with child_flags.recording():
        while True:
            try:
                ledger.record_many(results)
                return
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                logger.warning("candidate(s) %s: result(s) kept until Redis answers again (%s)",
                               ", ".join(r.candidate_id for r in results[:3]), exc)
                time.sleep(RECORD_RETRY_S)


# ignore_result: nothing reads the body's return value (the ledger's state is the outcome);
# storing it cost every generation a GET, a SETEX kept for result_expires and a PUBLISH.
@app.task(name=FINALIZE_TASK, acks_late=True, ignore_result=True)
def finalize_generation(header_results: Any, generation_id: str) -> str:
    """Chord body: write the summary and mark the generation complete, on the worker side.

    The summary is written before the state flips, so whoever sees ``complete`` finds it; a
    generation the launcher already closed (deadline, cancel) keeps the launcher's summary.
    """
    ledger = _ledger(generation_id)
    status = ledger.status()  # one read: a launcher usually completed it already
    if status != RUNNING:
        return status or "unknown"
    header = ledger.header()
    summary = summarize(ledger.iter_results(), header.objectives, ledger.state())
    summary["status"] = "complete"
    return ledger.complete(summary, app.conf.evofleet_settings.retention_s)
