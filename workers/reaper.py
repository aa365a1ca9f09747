"""The lost-child reaper: a pool child that died is noticed within a fraction of a second, and
can be told apart from one a time limit is about to kill."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from celery import bootsteps

LOST_CHILD_POLL_S = 0.2
"""How often the worker's main process looks for pool children that have exited."""


def exit_status(pid: int | None) -> int | None:
    """How child ``pid`` ended, if it has exited and is not yet reaped; None while it runs.

    Negative: the signal that killed it (billiard's convention); else its exit code. The child
    is left for the pool to reap (``WNOWAIT``). None also for a pid that is not our child.
    """
    if not pid:
        return None
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return None
    if info is None or info.si_pid == 0:
        return None
    return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status


class LostChildReaper(bootsteps.StartStopStep):
    """Runs the pool's maintenance (reap exited children, mark their tasks lost, replace them)
    every ``LOST_CHILD_POLL_S`` seconds.

    The prefork pool watches each child's sentinel pipe, but the pipe closes a moment before the
    dead child can be reaped (and not at all while a grandchild that inherited it lives on):
    Celery then finds the child only at its next 5 s maintenance, by which time a short hard
    time limit may have fired and a crash would be recorded as a timeout. Costs the idle main
    process about 2 ms of CPU a second.
    """

    label = "evofleet lost-child reaper"
    requires = ("celery.worker.components:Pool",)

    def register_with_event_loop(self, w: Any, hub: Any) -> None:
        maintain = getattr(w.pool, "maintain_pool", None)
        if maintain is None:  # solo and threads pools have no children to lose
            return
        hub.call_repeatedly(LOST_CHILD_POLL_S, maintain)
        _reap_before_hard_limits(getattr(w.pool, "_pool", None), maintain)


def _reap_before_hard_limits(pool: Any, maintain: Callable[[], None]) -> None:
    """Make the pool reap its dead children just before it enforces a hard time limit.

    A child that died since the last sweep (or that billiard already reaped while starting
    another child) then has its task marked lost, and the limit, seeing the task done, kills
    nothing: only a child still running when its limit passes becomes a ``timeout``.
    """
    enforce = getattr(pool, "on_hard_timeout", None)
    if enforce is None or getattr(enforce, "_evofleet_reaps_first", False):
        return  # not billiard's AsynPool, or wrapped already (the loop re-registers)

    def reap_then_enforce(job: Any) -> None:
        maintain()
        enforce(job)

    reap_then_enforce._evofleet_reaps_first = True  # type: ignore[attr-defined]
    pool.on_hard_timeout = reap_then_enforce
