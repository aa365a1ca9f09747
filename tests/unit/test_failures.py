"""Failures as results, the pure parts: tracebacks, limit messages, the echo, a child's exit."""

from __future__ import annotations

import os
import signal
import time

import pytest
from billiard.exceptions import SoftTimeLimitExceeded

from workers.contract import ECHO_LIMIT_BYTES, Candidate, candidate_echo
from workers.failures import TRACEBACK_LIMIT, error_info, soft_time_limit, status_of
from workers.reaper import exit_status


def _deep(n: int) -> None:
    if n == 0:
        raise ValueError("bottom of the stack")
    _deep(n - 1)


def test_an_exception_keeps_its_traceback_bounded_to_its_last_part() -> None:
    try:
        _deep(3)
    except ValueError as exc:
        info = error_info(exc, with_traceback=True)
    assert info.type == "ValueError" and info.message == "bottom of the stack"
    assert info.traceback is not None and "in _deep" in info.traceback
    assert info.traceback.rstrip().endswith("ValueError: bottom of the stack")
    try:
        raise RuntimeError("y" * 3 * TRACEBACK_LIMIT + " the end")
    except RuntimeError as exc:
        long = error_info(exc, with_traceback=True)
    assert long.traceback is not None and len(long.traceback) <= TRACEBACK_LIMIT + 3
    assert long.traceback.startswith("...") and long.traceback.rstrip().endswith("the end")
    assert len(long.message) == 2000
    assert error_info(ValueError("x")).traceback is None  # only where asked for


def test_the_soft_limit_says_which_limit_in_seconds() -> None:
    with pytest.raises(SoftTimeLimitExceeded) as caught, soft_time_limit(0.05):
        time.sleep(5)
    info = error_info(caught.value)
    assert status_of(caught.value).value == "timeout"
    assert info.type == "SoftTimeLimitExceeded"
    assert info.message == "soft time limit (0.05s) exceeded"


def test_params_and_metadata_are_echoed_unless_too_large() -> None:
    small = Candidate(id="a", params={"x": [1.0, 2.0]}, metadata={"parent": "p"})
    assert candidate_echo(small) == {"params": {"x": [1.0, 2.0]}, "metadata": {"parent": "p"}}
    large = Candidate(id="b", params={"blob": "x" * ECHO_LIMIT_BYTES}, metadata={"m": 1})
    # Each field on its own: the large params are not echoed, the small metadata still is.
    assert candidate_echo(large) == {"params": None, "metadata": {"m": 1}}
    assert candidate_echo(Candidate(id="c")) == {"params": {}, "metadata": None}


def test_exit_status_tells_a_dead_child_without_reaping_it() -> None:
    pid = os.fork()
    if pid == 0:  # the child kills itself, as a poison candidate does
        os.kill(os.getpid(), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while (status := exit_status(pid)) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert status == -signal.SIGKILL
    assert exit_status(pid) == -signal.SIGKILL  # not reaped: the pool still can
    _, raw = os.waitpid(pid, 0)
    assert os.WTERMSIG(raw) == signal.SIGKILL
    assert exit_status(pid) is None  # reaped now: nothing to say


def test_exit_status_of_a_running_child_is_none() -> None:
    pid = os.fork()
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    try:
        assert exit_status(pid) is None
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    child = os.fork()
    if child == 0:
        os._exit(7)
    os.waitid(os.P_PID, child, os.WEXITED | os.WNOWAIT)
    assert exit_status(child) == 7
    os.waitpid(child, 0)
