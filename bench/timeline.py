"""The timeline of one small generation: every Redis command, by whom, in ms since ``launch()``.

``python bench/timeline.py [--candidates N] [--chunk-size K|auto]`` starts a private redis-server
and one worker (2 pool children), warms them up, then records Redis MONITOR while one generation
runs. Each command is labelled with the process that sent it (launcher, worker main process, pool
child), found from the sockets' owners, so waiting shows up as gaps between lines. MONITOR runs
in a subprocess.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
import redis  # noqa: E402

from bench.run import evofleet_worker, spec_for  # noqa: E402
from orchestration.api import launch  # noqa: E402
from orchestration.local_cluster import LocalRedis  # noqa: E402


def owners(port: int, worker_pid: int) -> dict[int, str]:
    """Local port of each connection to Redis -> the role of the process holding it."""
    main = psutil.Process(worker_pid)
    roles = {os.getpid(): "launcher", worker_pid: "worker main"}
    roles.update({child.pid: f"pool child {child.pid}" for child in main.children()})
    found = {}
    for pid, role in roles.items():
        for conn in psutil.Process(pid).net_connections(kind="tcp"):
            if conn.raddr and conn.raddr.port == port:
                found[conn.laddr.port] = role
    return found


def monitor(url: str, out: str) -> None:
    """Run in a subprocess (the launcher's own timing stays undisturbed): write every command
    Redis executes, as ``time port command`` lines, until killed."""
    client = redis.Redis.from_url(url)
    with open(out, "w") as sink, client.monitor() as feed:
        sink.write("ready\n")
        sink.flush()
        for command in feed.listen():
            text = str(command["command"]).replace("\n", " ")
            sink.write(f"{command['time']} {command['client_port'] or 0} {text}\n")
            sink.flush()


def record(url: str, candidates: int, chunk_size: int | str, worker_pid: int,
           port: int) -> list[tuple[float, str, str]]:
    out = Path(tempfile.mkdtemp(prefix="evofleet-timeline-")) / "monitor.txt"
    watcher = subprocess.Popen([sys.executable, __file__, "--monitor", url, str(out)])
    try:
        deadline = time.monotonic() + 30
        while not (out.exists() and out.read_text().startswith("ready")):
            if time.monotonic() > deadline:
                raise TimeoutError("the MONITOR subprocess did not start")
            time.sleep(0.05)
        spec = spec_for(candidates, chunk_size=chunk_size)
        started = time.time()
        generation = launch(spec, broker_url=url)
        launched = time.time()
        status = generation.wait(60)
        ended = time.time()
        time.sleep(0.3)  # the chord body's commands, after the launcher is done
        roles = owners(port, worker_pid)
    finally:
        watcher.terminate()
        watcher.wait(10)
    rows = []
    for line in out.read_text().splitlines()[1:]:
        stamp, client_port, command = line.split(" ", 2)
        who = roles.get(int(client_port), "lua" if client_port == "0" else f"port {client_port}")
        rows.append((float(stamp), who, command))
    rows += [(started, "MARK", "launch() called"), (launched, "MARK", "launch() returned"),
             (ended, "MARK", f"wait() returned {status!r}")]
    shutil.rmtree(out.parent, ignore_errors=True)
    return [(1000 * (t - started), who, what) for t, who, what in sorted(rows) if t >= started]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=1, help="Population size (default 1).")
    parser.add_argument("--chunk-size", default="1", help="Candidates per message, or auto (default 1).")
    parser.add_argument("--width", type=int, default=110, help="Characters of each command.")
    parser.add_argument("--monitor", nargs=2, metavar="ARG", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.monitor:
        monitor(*args.monitor)
        return
    chunk_size: int | str = args.chunk_size if args.chunk_size == "auto" else int(args.chunk_size)
    server = LocalRedis().start()
    try:
        with evofleet_worker(server, server.workdir) as worker:
            for _ in range(5):  # warm: shared connections, pool children's clients
                launch(spec_for(args.candidates, chunk_size=chunk_size), broker_url=server.url).wait(60)
            rows: list[Any] = record(server.url, args.candidates, chunk_size, worker.pid, server.port)
    finally:
        server.stop()
    for ms, who, what in rows:
        if who != "lua":
            print(f"{ms:8.2f} ms  {who:<18} {what[:args.width]}")


if __name__ == "__main__":
    main()
