"""The one place where a failure becomes a result.

| failure                                  | status    | recorded by            | retried                    |
|------------------------------------------|-----------|------------------------|----------------------------|
| evaluator raises (CUDA errors included)  | error     | pool child             | no                         |
| soft time limit (per-candidate timer)    | timeout   | pool child             | no                         |
| pool child dies (SIGKILL, OOM, sys.exit) | crashed   | worker main process    | alone, crash_retries times |
| hard time limit kills the running child  | timeout   | worker main process    | no                         |
| ... while its results wait for Redis     | (theirs)  | pool child, given 5 s  | else the task, re-queued   |
| a chunk's child dies or hits its limit   | -         | worker main process    | unfinished ones, alone     |
| worker node lost (main process, machine) | any       | worker that re-runs it | after visibility_timeout   |
| generation deadline passes               | timeout   | launcher (or resume)   | no                         |
| generation cancelled                     | cancelled | cancel command / API   | no                         |

A crashed result carries the signal (``SIGKILL``, exitcode -9) or the exit code in ``error`` and
``attempts = crash_retries + 1``. Runs are counted twice over, so a poison candidate can never
loop: the pool child counts an attempt when the candidate starts alone (``Ledger.begin``)
and this process counts each loss in the re-sent message (``LOSSES_HEADER``), which also catches
a child that dies before the attempt is counted. The main process finds a dead child within
``LOST_CHILD_POLL_S`` (``workers/reaper.py``; Celery's own sweep runs every 5 s), and reaps once
more before it enforces a hard limit: a child that died by itself is ``crashed`` whatever the
limit, only one still running when its limit passes is ``timeout``. A lost node's message is
re-run by another worker and counts as an attempt; restoring needs a live worker's sweep, every
``unacked_restore_interval`` s (``workers/celery_app.py``). After a deadline or a cancel, workers
skip the generation's queued messages, and a result that arrives late does not overwrite.
"""

from __future__ import annotations

import logging
import re
import signal
import traceback
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from billiard.common import human_status
from billiard.einfo import ExceptionInfo, ExceptionWithTraceback
from billiard.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded, WorkerLostError
from celery.worker.request import Request
from celery.worker.state import task_ready

from workers import child_flags, metrics
from workers.contract import (
    Candidate,
    ErrorInfo,
    EvaluationResult,
    Status,
    candidate_echo,
    from_timestamp,
    utc_now,
)
from workers.ledger import Ledger
from workers.reaper import exit_status
from workers.redis_client import client_for

logger = logging.getLogger(__name__)

_LOST_STATUS = re.compile(r"(?:signal (?P<signum>\d+) \((?P<signame>\w+)\))|(?:exitcode (?P<code>-?\d+))")


RECORD_GRACE_S = 5.0
"""How long a pool child past its hard time limit may go on recording results that waited for
Redis before the main process kills it and re-queues its task."""

TRACEBACK_LIMIT = 8 * 1024
"""Characters of an evaluator's traceback kept in ``error.traceback`` (its last ones)."""


def error_info(exc: BaseException, *, with_traceback: bool = False) -> ErrorInfo:
    """An exception as the result's ``error``; ``with_traceback`` keeps its traceback's last
    ``TRACEBACK_LIMIT`` characters (where it was raised is at the end)."""
    info = ErrorInfo(type=type(exc).__name__, message=str(exc)[:2000])
    if isinstance(exc, SoftTimeLimitExceeded) and exc.args:
        info.message = str(exc.args[0])[:2000]  # billiard's str() is "SoftTimeLimitExceeded(...)"
    if with_traceback:
        text = "".join(traceback.format_exception(exc))
        info.traceback = text if len(text) <= TRACEBACK_LIMIT else "..." + text[-TRACEBACK_LIMIT:]
    return info


def status_of(exc: BaseException) -> Status:
    """Which status an exception raised inside an evaluation becomes."""
    return Status.timeout if isinstance(exc, SoftTimeLimitExceeded) else Status.error


def lost_worker_error(exc: BaseException) -> ErrorInfo:
    """A lost pool child's error, with the signal or exit code billiard reported."""
    text = str(exc)
    info = ErrorInfo(type=type(exc).__name__, message=text[:2000])
    match = _LOST_STATUS.search(text)
    if match and match["signame"]:
        info.signal = match["signame"]
        info.exitcode = -int(match["signum"])
    elif match and match["code"]:
        info.exitcode = int(match["code"])
    return info


@contextmanager
def soft_time_limit(seconds: float) -> Iterator[None]:
    """Raise SoftTimeLimitExceeded in this (pool child's main) thread after ``seconds``; its
    message says which limit it was."""

    def _raise_soft_limit(signum: int, frame: FrameType | None) -> None:
        raise SoftTimeLimitExceeded(f"soft time limit ({seconds:g}s) exceeded")

    previous = signal.signal(signal.SIGALRM, _raise_soft_limit)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class EvaluateRequest(Request):
    """Runs in the worker's main process: a lost child or a hard limit becomes a result.

    The result is recorded in the ledger and the task marked done with ``mark_as_done``, so the
    chord counts it as an ordinary header result, and the message is acknowledged, not re-queued.
    """

    _evofleet_settled = False

    def on_timeout(self, soft: bool, timeout: float) -> None:
        if soft:
            super().on_timeout(soft, timeout)
            return
        task_ready(self)
        if not self._evofleet_settled:
            exc = self._died_first(TimeLimitExceeded(timeout))
            self._settle(exc, hard_timeout=isinstance(exc, TimeLimitExceeded))

    def on_failure(
        self, exc_info: ExceptionInfo, send_failed_event: bool = True, return_ok: bool = False
    ) -> None:
        exc = exc_info.exception
        if isinstance(exc, ExceptionWithTraceback):
            exc = exc.exc
        if isinstance(exc, WorkerLostError | TimeLimitExceeded | SystemExit):
            task_ready(self)
            if isinstance(exc, TimeLimitExceeded):
                exc = self._died_first(exc)
            if isinstance(exc, SystemExit):
                exc = WorkerLostError(f"Worker exited prematurely: exitcode {exc.code or 0}.")
            self._settle(exc, hard_timeout=isinstance(exc, TimeLimitExceeded))
            return
        super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)

    def _died_first(self, exc: TimeLimitExceeded) -> BaseException:
        """The hard limit fired: was the child still running, or had it died by itself?

        Called before the pool kills the child, so a child that has already exited was not
        killed by the limit: it is lost (``crashed``, retried), not ``timeout``.
        """
        status = exit_status(self.worker_pid)
        if status is None:
            return exc
        logger.warning("task %s: its pool child %s had exited (%s) when the hard time limit "
                       "fired; recording a lost child", self.id, self.worker_pid,
                       human_status(status))
        return WorkerLostError(f"Worker exited prematurely: {human_status(status)}.")

    def _results_recorded(self) -> bool:
        """False if the child holds finished results that wait for Redis past the grace.

        Not the candidates' time: they had finished. Celery's main loop waits while its broker
        connection is down, so the limit often fires just as Redis is back, a moment before the
        child records them: waiting here (the child is killed when this returns) saves a re-run.
        """
        pid = self.worker_pid
        if pid is None or not child_flags.recording_in(pid):
            return True
        logger.warning("task %s: hard time limit passed while its results wait for Redis; its "
                       "pool child has %gs to record them", self.id, RECORD_GRACE_S)
        if child_flags.wait_recorded(pid, RECORD_GRACE_S):
            return True
        child_flags.clear(pid)
        logger.warning("task %s: its results still wait for Redis; re-queueing it to run again",
                       self.id)
        return False

    def _settle(self, exc: BaseException, *, hard_timeout: bool) -> None:
        # A hard time limit reaches us twice (on_timeout, then on_failure): act once.
        if self._evofleet_settled:
            return
        self._evofleet_settled = True
        metrics.lost_child(self.worker_pid, hard_timeout=hard_timeout)
        if hard_timeout and not self._results_recorded():
            self.reject(requeue=True)
            return
        child_flags.clear(self.worker_pid)
        try:
            settle_lost_task(self, exc, hard_timeout=hard_timeout)
        except Exception:
            logger.exception("could not record lost task %s; re-queueing it", self.id)
            self.reject(requeue=True)
            return
        self.acknowledge()
        self.send_event("task-failed", exception=repr(exc), traceback="")


LOSSES_HEADER = "evofleet_losses"  # how often this lone candidate's pool child was lost so far


def settle_lost_task(request: Request, exc: BaseException, *, hard_timeout: bool) -> None:
    """Record, re-send or split the candidates of a task whose pool child is gone.

    A lone candidate is re-sent while it has run fewer than ``crash_retries + 1`` times. Runs
    are the larger of the attempts the pool child counted at start and the losses this process
    counted in the message: a child that dies before the attempt is counted (an evaluator
    module that exits on import) reaches the limit too, instead of looping.
    """
    generation_id, raw_candidates, submitted_at = _task_arguments(request)
    candidates = [Candidate.model_validate(c) for c in raw_candidates]
    app = request.task.app
    ledger = Ledger(client_for(app.conf.result_backend), generation_id)
    header = ledger.header()
    done = ledger.recorded_ids(c.id for c in candidates)
    unfinished = [c for c in candidates if c.id not in done]
    attempts = ledger.attempts(c.id for c in unfinished)
    attached = ledger.attached(c.id for c in unfinished)  # outputs noted before the child died
    losses = int(request.request_dict.get(LOSSES_HEADER) or 0) + 1
    resend: list[Candidate] = []
    # A closed generation (deadline, cancel) re-runs nothing; the closer records the rest.
    for candidate in unfinished if ledger.is_open() else []:
        if len(candidates) > 1:  # a chunk's loss is not charged to its candidates
            resend.append(candidate)
            continue
        runs = max(attempts.get(candidate.id, 0), losses)
        if not hard_timeout and runs < header.crash_retries + 1:
            resend.append(candidate)
            continue
        error = lost_worker_error(exc) if not hard_timeout else error_info(exc)
        if hard_timeout:
            error.message = f"hard time limit ({header.time_limit:g}s) exceeded"
        ledger.record(
            EvaluationResult(
                **attached.get(candidate.id, {}),
                generation_id=generation_id,
                candidate_id=candidate.id,
                status=Status.timeout if hard_timeout else Status.crashed,
                error=error,
                attempts=runs,
                priority=candidate.priority,
                worker=request.hostname,
                submitted_at=from_timestamp(submitted_at),
                finished_at=utc_now(),
                **candidate_echo(candidate),
            )
        )
    if resend:
        _resend_alone(
            request, generation_id, resend, submitted_at, header.time_limit,
            losses=losses if len(candidates) == 1 else 0,
        )
    request.task.backend.mark_as_done(
        request.id, {"candidates": len(candidates)}, request=request._context, store_result=False
    )


def _resend_alone(
    request: Request,
    generation_id: str,
    candidates: list[Candidate],
    submitted_at: float,
    time_limit: float,
    *,
    losses: int,
) -> None:
    """Publish each candidate as its own task in the same chord, growing the chord first."""
    backend = request.task.backend
    group_id = request.group
    if group_id:
        # Each new task is one more chord part; the lost task itself is marked done after.
        backend.client.incrby(backend.get_key_for_group(group_id, ".t"), len(candidates))
    for candidate in candidates:
        request.task.apply_async(
            args=(generation_id, [candidate.model_dump(mode="json")], submitted_at),
            task_id=str(uuid.uuid4()),
            queue=candidate.priority.value,
            group_id=group_id,
            group_index=request.group_index,
            chord=request.chord,
            time_limit=time_limit,
            headers={LOSSES_HEADER: losses},
        )


def _task_arguments(request: Request) -> tuple[str, list[dict[str, Any]], float]:
    args = list(request.args)
    kwargs = dict(request.kwargs)
    names = ("generation_id", "candidates", "submitted_at")
    values = args + [kwargs[name] for name in names[len(args) :]]
    return str(values[0]), list(values[1]), float(values[2])
