"""A background writer: generation k's files are written while generation k+1 is evaluated.

Jobs run one at a time in submission order, so a checkpoint queued after a generation's Parquet
file and history line is written only once they are. The queue is bounded: the loop never runs
more than ``depth`` generations ahead of its files.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)
Job = Callable[[], None]
WRITE_TIMEOUT_S = 600.0  # one job (a Parquet file, a plot) never takes this long on a live disk


class WriterFailed(RuntimeError):
    """The background writer did not finish its jobs in time."""


class BackgroundWriter:
    """Runs jobs in order on one thread. After a job raises, later jobs are skipped and the
    error is raised by the next ``submit``, ``flush`` or ``close``."""

    def __init__(self, name: str, depth: int = 2, timeout_s: float = WRITE_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        # A job, a flush's Event (set when reached), or None: stop.
        self._queue: queue.Queue[Job | threading.Event | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Queue ``job``; blocks while ``depth`` jobs wait. Raises an earlier job's error."""
        self._raise()
        self._put(job)

    def flush(self) -> None:
        """Wait until every job submitted so far has run; raise the first error of any."""
        done = threading.Event()
        self._put(done)
        if not done.wait(self.timeout_s):
            raise WriterFailed(f"the run's files were not written within {self.timeout_s:g}s")
        self._raise()

    def close(self) -> BaseException | None:
        """Run what is queued, stop the thread; return the first error (None when all ran)."""
        if self._thread.is_alive():
            try:
                self._put(None)
            except WriterFailed as exc:
                return self._error or exc
            self._thread.join(self.timeout_s)
            if self._thread.is_alive():
                return self._error or WriterFailed(
                    f"the run's files were not written within {self.timeout_s:g}s")
        return self._error

    def _put(self, item: Job | threading.Event | None) -> None:
        try:
            self._queue.put(item, timeout=self.timeout_s)
        except queue.Full:
            raise WriterFailed(f"the run's writer made no progress in {self.timeout_s:g}s") from None

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, threading.Event):
                item.set()
                continue
            if self._error is not None:
                continue  # after a failed write, later files would claim more than is on disk
            try:
                item()
            except BaseException as exc:
                logger.exception("writing the run's files failed")
                self._error = exc
