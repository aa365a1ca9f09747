"""Which pool children hold finished results that wait for Redis, readable by the main process.

A pool child that cannot reach Redis keeps its finished results and retries
(``workers.tasks.record_when_reachable``). If its task's hard time limit fires meanwhile, the
worker's main process must not record those candidates as ``timeout``: they ran within their
limit. It gives the child a moment to record them, and re-queues the task if it cannot.

The flags are one byte per pid in anonymous shared memory, mapped when this module is imported
in the main process, so the pool children it forks share them.
"""

from __future__ import annotations

import mmap
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _pid_limit() -> int:
    try:
        return int(Path("/proc/sys/kernel/pid_max").read_text())
    except (OSError, ValueError):
        return 1 << 22


_FLAGS = mmap.mmap(-1, _pid_limit())  # shared, and only the pages a pid touches take memory
POLL_S = 0.02


@contextmanager
def recording() -> Iterator[None]:
    """Flag this process as recording finished results for as long as the block runs."""
    pid = os.getpid()
    flagged = pid < len(_FLAGS)
    if flagged:
        _FLAGS[pid] = 1
    try:
        yield
    finally:
        if flagged:
            _FLAGS[pid] = 0


def recording_in(pid: int | None) -> bool:
    """Whether process ``pid`` is inside ``recording()`` now."""
    return pid is not None and 0 < pid < len(_FLAGS) and _FLAGS[pid] == 1


def wait_recorded(pid: int, timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` for process ``pid`` to leave ``recording()``; True if it did."""
    deadline = time.monotonic() + timeout_s
    while recording_in(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)
    return True


def clear(pid: int | None) -> None:
    """Lower ``pid``'s flag (a child killed inside ``recording()``): the pid may be reused."""
    if pid is not None and 0 < pid < len(_FLAGS):
        _FLAGS[pid] = 0
