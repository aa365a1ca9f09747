"""A running generation seen from the launcher: submission, batched collection, deadline, end."""

from __future__ import annotations

import atexit
import logging
import os
import socket
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Sequence
from typing import IO, Any, cast

import redis
from celery import Celery

from orchestration.recovery import LostMessageWatch
from orchestration.sinks import Sink
from orchestration.submit import Submitter
from workers.artifacts import load_artifact
from workers.contract import EvaluationResult, Status
from workers.ledger import RUNNING, Ledger
from workers.summary import SummaryBuilder

logger = logging.getLogger(__name__)

BatchCallback = Callable[[Sequence[EvaluationResult]], None]
STALL_RECORD_S = 5.0  # a closed generation whose closer vanished is completed after this
COLLECTOR_LEASE_S = 5.0  # a dead launcher's lease lapses after this; `resume` waits for it
OUTAGE_LIMIT_S = 300.0  # Redis may be away this long (restart, AOF reload) before we give up
_REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)

StreamReply = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]


class CollectorBusy(RuntimeError):
    """Another live process (a launcher, or a resume) is already collecting this generation."""


def collector_token() -> str:
    """A new collector lease token: which process holds the lease, and which of its handles."""
    return f"{os.getpid()}@{socket.gethostname()}/{uuid.uuid4().hex[:8]}"


class Generation:
    """Handle on one generation: drives submission and collection in a background thread.

    ``wait`` may be called from several threads at once; ``results`` and ``stats`` never block.
    A launch that has just created the generation passes what it stored (``created``: header
    and state, see ``Ledger.created``) and the lease it took with it (``lease``: its token).
    """

    def __init__(
        self,
        app: Celery,
        client: redis.Redis,
        generation_id: str,
        *,
        sinks: Sequence[Sink] = (),
        on_batch: BatchCallback | None = None,
        on_end: Callable[[], None] | None = None,
        owns_connections: bool = True,
        created: tuple[dict[str, Any], dict[str, str]] | None = None,
        lease: str | None = None,
    ) -> None:
        self.app = app
        self.client = client
        self.id = generation_id
        self.ledger = Ledger(client, generation_id)
        self.spec_header, state = created or self.ledger.header_and_state()
        self.sinks = list(sinks)
        self.on_batch = on_batch
        self._on_end = on_end
        self._owns_connections = owns_connections  # False: the process-wide shared ones
        self._ended = threading.Event()
        self._error: BaseException | None = None
        self._callback_error: BaseException | None = None
        self._status: str | None = None
        self._summary: dict[str, Any] | None = None
        # Every collected result passes through here once: the summary is ready at the last.
        self._tally = SummaryBuilder(self.spec_header.get("objectives", {}))
        self._batches = 0
        self._seen = 0
        self._started = time.monotonic()
        self._cancel_requested = threading.Event()
        self._claimed = lease is not None
        self._released = False
        self._token = lease or collector_token()
        self.submitter = Submitter(app, self.ledger, self.spec_header, state)
        # Submit only while running; refreshed every 0.5 s (the submitter's read of the state).
        self._open = self.submitter.state.get("status") in (RUNNING, None)
        self.total = self.submitter.total
        self.lost_watch = LostMessageWatch(self.ledger, self.submitter)
        if self.submitter.submitted:
            # A resume: the launcher before it may have missed an outage (or died in one).
            self.lost_watch.outage_ended(time.monotonic())
        self._thread = threading.Thread(target=self._run, name=f"evofleet-{generation_id}", daemon=True)
        self.local = False  # local mode: its private Redis and workers stop when it ends
        self.artifact_store: str | None = self.spec_header.get("artifact_store")
        self.artifacts_written = 0  # results collected that reference an artifact
        self._spool: IO[str] | None = None  # local mode: results outlive its Redis, on disk

    # -- public API -------------------------------------------------------------
    def claim(self, timeout_s: float = COLLECTOR_LEASE_S + 1.0) -> None:
        """Take the collector lease: only one process submits and collects a generation.

        Two would submit its candidates twice, so a ``resume`` waits up to ``timeout_s`` for a
        dead launcher's lease to lapse, and raises CollectorBusy if a live one still holds it.
        """
        deadline = time.monotonic() + timeout_s
        while not self.ledger.claim_collector(self._token, COLLECTOR_LEASE_S):
            if time.monotonic() >= deadline:
                raise CollectorBusy(
                    f"generation {self.id} is being collected by {self.ledger.collector()}"
                )
            time.sleep(0.2)
        self._claimed = True

    def start(self) -> Generation:
        """Submit and collect in a background thread (claiming the lease first if needed)."""
        if not self._claimed:
            self.claim()
        if self.local:
            # Its Redis and workers live in sessions of their own: if this program ends before
            # the generation does, nothing else would stop them.
            atexit.register(self.close)
        if self._open:
            try:
                # The first chunks go out from here: a small generation's work is queued
                # without waiting for a new thread to be scheduled.
                self.submitter.submit_more(recorded=0)
            except Exception:  # the collector thread tries again, and reports it
                logger.debug("generation %s: first submission deferred", self.id, exc_info=True)
        self._thread.start()
        return self

    def wait(self, timeout: float | None = None) -> str:
        """Block until the generation ends; return ``complete``, ``partial`` or ``cancelled``.

        Raises TimeoutError if it has not ended within ``timeout`` seconds (it keeps running).
        """
        if not self._ended.wait(timeout):
            raise TimeoutError(f"generation {self.id} still running after {timeout}s")
        if self._error is not None:
            raise self._error
        if self._callback_error is not None:
            raise self._callback_error  # every result was still collected, the summary written
        assert self._status is not None
        return self._status

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    def results(self) -> list[EvaluationResult]:
        """The results recorded so far (from the ledger, without blocking); in local mode,
        after the end, those collected (its Redis is gone)."""
        if self.local and self.ended:
            if self._spool is None:
                return []
            self._spool.seek(0)
            return [EvaluationResult.model_validate_json(line) for line in self._spool]
        return list(self.ledger.iter_results())

    def results_or(self, collected: list[EvaluationResult]) -> list[EvaluationResult]:
        """``collected`` (what an ``on_batch`` callback kept) when it holds a result for every
        candidate, else :meth:`results`: Redis is read again only if some were missed."""
        if len({result.candidate_id for result in collected}) == self.total:
            return collected
        return self.results()

    def result(self, candidate_id: str) -> EvaluationResult:
        """One candidate's result (KeyError if it has none yet)."""
        if self.local and self.ended:
            found = [r for r in self.results() if r.candidate_id == candidate_id]
            result = found[0] if found else None
        else:
            result = self.ledger.result(candidate_id)
        if result is None:
            raise KeyError(f"generation {self.id} has no result for candidate {candidate_id!r}")
        return result

    def artifact(self, candidate_id: str, name: str, *, as_path: bool = False) -> Any:
        """An artifact of a candidate: tensors as given, else bytes; a local file with
        ``as_path`` (see ``workers.artifacts.load_artifact``)."""
        options = self.app.conf.evofleet_settings.artifact_store_options
        return load_artifact(self.result(candidate_id), name, as_path=as_path, options=options)

    def summary(self) -> dict[str, Any] | None:
        return self._summary

    def stats(self) -> dict[str, Any]:
        elapsed = time.monotonic() - self._started
        return {
            "generation_id": self.id,
            "total": self.total,
            "submitted": self.submitter.submitted,
            "collected": self._seen,
            "in_flight": self.submitter.submitted - self._seen,
            "counts": {s.value: self._tally.counts.get(s.value, 0) for s in Status},
            "batches": self._batches,
            "elapsed_s": elapsed,
            "throughput_per_s": self._seen / elapsed if elapsed > 0 else 0.0,
        }

    def cancel(self) -> None:
        """Stop submitting, record ``cancelled`` for every candidate without a result."""
        self._cancel_requested.set()

    def close(self, timeout: float = 30.0) -> None:
        """Local mode: cancel if still running, then stop its Redis and workers (also run at
        interpreter exit). Against a deployment the generation goes on; this stops nothing."""
        if not self.local or not self._thread.is_alive():
            return
        self.cancel()
        self._ended.wait(timeout)

    # -- the loop ---------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._collect()
            self._status, self._summary = self._finish()
        except BaseException as exc:  # surfaced by wait()
            logger.exception("generation %s: collector failed", self.id)
            self._error = exc
        finally:
            try:
                if not self._released:
                    self.ledger.release_collector(self._token)
            except redis.RedisError:
                logger.warning("generation %s: could not release the collector lease", self.id)
            for sink in self.sinks:
                try:
                    sink.close()
                except Exception:
                    logger.exception("closing sink %s", sink.path)
            if self._owns_connections:
                self.client.close()  # its connections; results() after the end reconnects
                self.app.close()
            if self._on_end is not None:
                self._on_end()
            if self.local:
                atexit.unregister(self.close)
            self._ended.set()

    def _collect(self) -> None:
        """Read the result stream in batches until every candidate has a result.

        Redis going away (a restart) does not end the generation: the loop keeps its stream
        position and carries on when Redis is back, for up to ``OUTAGE_LIMIT_S``; from then on
        it republishes candidates whose task message the outage lost (``recovery``).
        """
        batch_size = int(self.spec_header.get("batch_size", 50))
        batch_timeout = float(self.spec_header.get("batch_timeout", 2.0))
        deadline_at = float(self.submitter.state.get("deadline_at", "inf"))
        last_id: bytes | str = "0-0"
        batch: list[EvaluationResult] = []
        batch_started = 0.0
        last_progress = time.monotonic()
        next_state_check = last_progress + 0.5  # the lease was just taken
        down_since: float | None = None
        while self._seen + len(batch) < self.total:
            try:
                if self._open:  # kept current by _check_end_early, not one read per loop
                    self.submitter.submit_more(recorded=self._seen + len(batch))
                now = time.monotonic()
                wait_s = batch_timeout - (now - batch_started) if batch else batch_timeout
                reply = self._read(last_id, max(1, batch_size - len(batch)), min(wait_s, 0.25))
                if reply:
                    last_id = reply[-1][0]
                    if not batch:
                        batch_started = time.monotonic()
                    batch.extend(self.ledger.stream_results(reply))
                    last_progress = time.monotonic()
                now = time.monotonic()
                if now >= next_state_check and self._seen + len(batch) < self.total:
                    next_state_check = now + 0.5
                    self._check_end_early(deadline_at, now - last_progress, self._renew_lease())
                if down_since is not None:
                    self.lost_watch.outage_ended(now)
                    down_since = None
                if self._open and self.submitter.submitted > self._seen + len(batch):
                    self.lost_watch.poll(now)
            except _REDIS_DOWN as exc:
                down_since = self._redis_down(down_since, exc)
            now = time.monotonic()
            if batch and (len(batch) >= batch_size or now - batch_started >= batch_timeout):
                self._flush(batch)
                batch = []
        self._flush(batch)

    def _read(
        self, last_id: bytes | str, count: int, block_s: float
    ) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """Up to ``count`` stream entries after ``last_id``, waiting at most ``block_s``."""
        block_ms = max(1, int(block_s * 1000))
        reply = cast(
            StreamReply,
            self.client.xread({self.ledger.keys.stream: last_id}, count=count, block=block_ms),
        )
        return [entry for _stream, entries in reply or [] for entry in entries]

    def _redis_down(self, down_since: float | None, exc: Exception) -> float:
        """Note an outage, wait a little; raise once it has lasted OUTAGE_LIMIT_S."""
        now = time.monotonic()
        if down_since is None:
            logger.warning("generation %s: Redis unreachable (%s); waiting for it", self.id, exc)
            down_since = now
        elif now - down_since > OUTAGE_LIMIT_S:
            raise exc
        time.sleep(0.5)
        return down_since

    def _renew_lease(self) -> str | None:
        """Renew the collector lease; return the generation's status, read in the same step."""
        held, status = self.ledger.renew_collector(self._token, COLLECTOR_LEASE_S)
        if not held:
            raise CollectorBusy(
                f"generation {self.id}: {self.ledger.collector()} took over collecting"
            )
        return status

    def _check_end_early(self, deadline_at: float, idle_s: float, status: str | None) -> None:
        if self._cancel_requested.is_set():
            status = self._end_early("cancelled")
        elif time.time() >= deadline_at:
            status = self._end_early("partial")
        self._open = status in (RUNNING, None)
        if status not in (RUNNING, None, "complete") and idle_s > STALL_RECORD_S:
            # Closed by someone (cancel command, deadline) who did not finish recording.
            self._record_missing(status)

    def _end_early(self, status: str) -> str:
        """Close the generation with ``status`` unless it already ended; return its end state."""
        ended = self.ledger.close(status)
        if ended == status:
            logger.warning("generation %s ends early: %s", self.id, status)
            self._record_missing(status)
        return ended

    def _record_missing(self, status: str) -> None:
        kind = Status.cancelled if status == "cancelled" else Status.timeout
        deadline = float(self.spec_header.get("deadline", 0))
        reason = ("generation cancelled" if status == "cancelled"
                  else f"generation deadline ({deadline:g}s) passed")
        self.ledger.record_missing(kind, reason)

    def _flush(self, batch: list[EvaluationResult]) -> None:
        if not batch:
            return
        for sink in self.sinks:
            sink.write(batch)
        for result in batch:
            self.artifacts_written += bool(result.artifacts)
            self._tally.add(result)
        self.submitter.observe(batch)
        self._seen += len(batch)
        self._batches += 1
        if self.local:
            if self._spool is None:
                self._spool = tempfile.TemporaryFile("w+")
                weakref.finalize(self, self._spool.close)  # deleted with this handle
            self._spool.write("".join(result.model_dump_json() + "\n" for result in batch))
            self._spool.flush()
        if self.on_batch is not None and self._callback_error is None:
            try:
                self.on_batch(batch)
            except Exception as exc:  # collection goes on; wait() raises it at the end
                logger.exception("generation %s: on_batch raised; not called again", self.id)
                self._callback_error = exc

    def _finish(self) -> tuple[str, dict[str, Any]]:
        """Every result is in: complete the generation now, unless it already ended.

        The chord body does the same on the worker side (and alone, when this launcher is gone);
        the first to complete wins, so the end of a small generation waits on nobody.
        """
        # Every result went through _flush; total and created_at are fixed at creation.
        summary = self._tally.summary(self.submitter.state)
        summary["status"] = "complete"
        status, stored = self.ledger.complete_and_read(summary, self._retention(),
                                                       release=self._token)
        self._released = True  # released above (or already not ours)
        if status == "complete":
            return status, stored or summary  # stored: the chord body's, when it was first
        # Ended early (deadline, cancel): the closer's summary, or one written here.
        if stored is not None and stored.get("status") == status:
            return status, stored
        summary = self._tally.summary(self.ledger.state())
        summary["status"] = status
        self.ledger.write_summary(summary, self._retention())
        return status, summary

    def _retention(self) -> int:
        return int(self.app.conf.evofleet_settings.retention_s)
