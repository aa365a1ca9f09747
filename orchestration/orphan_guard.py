"""Stops a local cluster whose launcher died without stopping it (SIGKILL, the OOM killer).

``python -m orchestration.orphan_guard [--remove DIR] PGID...`` reads its standard input to the
end. The launcher holds the pipe's only write end: it writes ``release`` once it has stopped the
cluster itself; an end of input with nothing written means the launcher is gone, and the guard
stops every process group named (SIGTERM, then SIGKILL after a grace period) and removes DIR.
It imports nothing of evofleet's, so it costs a bare interpreter.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

GRACE_S = 5.0
RELEASE = b"release"


def _alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a group id taken since by another user's processes
        return False
    return True


def stop_groups(groups: Sequence[int], grace_s: float = GRACE_S) -> None:
    """SIGTERM every process group, SIGKILL those still there after ``grace_s``."""
    for group in groups:
        if _alive(group):
            os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while any(_alive(group) for group in groups) and time.monotonic() < deadline:
        time.sleep(0.05)
    for group in groups:
        if _alive(group):
            os.killpg(group, signal.SIGKILL)


def start_guard(groups: Sequence[int], remove: Path | None = None) -> subprocess.Popen[bytes]:
    """Start a guard for ``groups``; call :func:`release_guard` once they were stopped normally."""
    command = [sys.executable, "-m", "orchestration.orphan_guard"]
    if remove is not None:
        command += ["--remove", str(remove)]
    command += [str(group) for group in groups]
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    # Its own session, so a Ctrl-C meant for the launcher does not end the guard first.
    return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env, start_new_session=True)


def release_guard(guard: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """Tell the guard the cluster was stopped normally and let it exit."""
    assert guard.stdin is not None
    try:
        guard.stdin.write(RELEASE)
        guard.stdin.close()
        guard.wait(timeout=timeout_s)
    except (BrokenPipeError, subprocess.TimeoutExpired):
        guard.kill()
        guard.wait(timeout=timeout_s)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--remove", type=Path, help="a folder to delete once the groups are gone")
    parser.add_argument("groups", type=int, nargs="+", help="process group ids to stop")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.stdin.buffer.read() == RELEASE:
        return 0
    stop_groups(args.groups)
    if args.remove is not None:
        shutil.rmtree(args.remove, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
