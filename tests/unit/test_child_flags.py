"""The recording flag a forked child raises is seen by its parent, until it is lowered."""

from __future__ import annotations

import os
import signal

from workers import child_flags


def test_a_forked_child_killed_while_recording_stays_flagged_until_cleared() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: killed inside the block, as a pool child at its hard limit
        try:
            with child_flags.recording():
                os.write(write, b"x")
                while True:
                    signal.pause()
        finally:
            os._exit(1)  # never go on running pytest's session in the fork
    try:
        signalled = os.read(read, 1)
    finally:
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        os.close(read)
        os.close(write)
    assert signalled == b"x"
    assert os.WIFSIGNALED(status)  # killed inside the block, not left it
    assert child_flags.recording_in(pid)
    assert not child_flags.wait_recorded(pid, 0.1)  # it never leaves the block
    child_flags.clear(pid)  # the pid may come back for another process
    assert not child_flags.recording_in(pid)


def test_a_parent_waits_for_its_child_to_finish_recording() -> None:
    to_parent, from_child = os.pipe()
    to_child, from_parent = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            with child_flags.recording():
                os.write(from_child, b"x")
                os.read(to_child, 1)  # until the parent has seen the flag
        finally:
            os._exit(0)
    try:
        assert os.read(to_parent, 1) == b"x"
        assert child_flags.recording_in(pid)
        os.write(from_parent, b"y")
        assert child_flags.wait_recorded(pid, 10)
    finally:
        os.waitpid(pid, 0)
        for fd in (to_parent, from_child, to_child, from_parent):
            os.close(fd)
    assert not child_flags.recording_in(None)
