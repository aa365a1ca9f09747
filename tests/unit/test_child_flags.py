"""The recording flag a forked child sets is read, and cleared, by its parent."""

from __future__ import annotations

import os

from workers import child_flags


def test_a_forked_child_killed_while_recording_is_seen_recording_once() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: killed inside the block, as a pool child at its hard limit
        with child_flags.recording():
            os.write(write, b"x")
            while True:
                os.pause()
    try:
        signalled = os.read(read, 1)
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        os.close(read)
        os.close(write)
    assert signalled == b"x"
    assert child_flags.take_recording(pid)
    assert not child_flags.take_recording(pid)  # cleared: the pid may come back for another


def test_the_flag_is_down_once_recording_ends() -> None:
    with child_flags.recording():
        assert child_flags.take_recording(os.getpid())
    assert not child_flags.take_recording(os.getpid())
    assert not child_flags.take_recording(None)
