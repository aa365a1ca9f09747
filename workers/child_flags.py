"""Which pool children hold finished results that wait for Redis, readable by the main process.

A pool child that cannot reach Redis keeps its finished results and retries
(``workers.tasks.record_when_reachable``). If its task's hard time limit fires meanwhile, the
worker's main process must not record those candidates as ``timeout``: they ran within their
limit. The flags are one byte per pid in anonymous shared memory, mapped when this module is
imported in the main process, so the pool children it forks share them.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _pid_limit() -> int:
    try:
        return int(Path("/proc/sys/kernel/pid_max").read_text())
    except (OSError, ValueError):
        return 1 << 22


_FLAGS = mmap.mmap(-1, _pid_limit())  # shared, and only the pages a pid touches take memory


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


def take_recording(pid: int | None) -> bool:
    """Whether process ``pid`` was recording; clears its flag, as the pid may be reused."""
    if not pid or pid >= len(_FLAGS):
        return False
    flagged = _FLAGS[pid] == 1
    _FLAGS[pid] = 0
    return flagged
