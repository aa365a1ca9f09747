"""The Procfile under ``honcho start`` run from the venv without activating it: redis, a worker
and Flower serve a generation; Flower's ``/api/workers`` (basic auth) lists the worker without a
refresh, ``/metrics`` sees the tasks; SIGTERM stops everything, no orphans."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestration.local_cluster import free_port
from tests.conftest import make_spec, run_spec

ROOT = Path(__file__).resolve().parents[2]
AUTH = "ops:s3cret-flower"
WORKER = "procfile@127.0.0.1"


def http_get(url: str, auth: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, ""


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc: no psutil needed)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def without_venv(path: str) -> str:
    """``path`` without this interpreter's bin folder; no ``evofleet`` is left on it."""
    venv_bin = Path(sys.executable).parent.resolve()
    kept = os.pathsep.join(p for p in path.split(os.pathsep) if p and Path(p).resolve() != venv_bin)
    assert shutil.which("evofleet", path=kept) is None, "another evofleet on PATH"
    return kept


def wait_for(what: str, check: object, timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout_s}s; honcho log:\n"
                                 + log.read_text()[-3000:])
        time.sleep(0.2)


class Honcho:
    """``honcho start`` in the repository root with its own ports."""

    def __init__(self, tmp_path: Path) -> None:
        redis_port, flower_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("EVOFLEET_", "FLOWER_")) and k not in ("VIRTUAL_ENV", "PYTHON")}
        # As `.venv/bin/honcho start` from a shell that did not activate the venv: neither
        # `evofleet` nor the venv's `python` is on PATH.
        env["PATH"] = without_venv(env.get("PATH", ""))
        if Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():
            env["PYTHON"] = sys.executable  # a venv elsewhere: deploy/venv-python cannot guess it
        env.update({
            "REDIS_PORT": str(redis_port), "REDIS_DIR": str(tmp_path / "redis"),
            "FLOWER_PORT": str(flower_port), "FLOWER_BASIC_AUTH": AUTH,
            "WORKER_CONCURRENCY": "2", "WORKER_NAME": WORKER,
        })
        self.url = f"redis://127.0.0.1:{redis_port}/0"
        self.flower = f"http://127.0.0.1:{flower_port}"
        self.log = tmp_path / "honcho.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "honcho", "start", "-f", str(ROOT / "Procfile"),
                 "-d", str(ROOT)],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def stop(self, signum: int = signal.SIGTERM, timeout_s: float = 30) -> tuple[int, list[int]]:
        """Signal honcho, wait for it; its exit code and the processes it left behind."""
        tree = descendants(self.process.pid)
        self.process.send_signal(signum)
        try:
            code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        time.sleep(0.2)
        return code, sorted(pid for pid in tree if alive(pid))

    def kill(self) -> None:
        for pid in descendants(self.process.pid) | {self.process.pid}:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(timeout=10)


@pytest.fixture
def honcho(tmp_path: Path) -> Iterator[Honcho]:
    started = Honcho(tmp_path)
    yield started
    if started.process.poll() is None:  # the test failed before stopping it
        started.kill()


def test_honcho_procfile_single_node(honcho: Honcho) -> None:
    log = honcho.log
    flower = honcho.flower
    wait_for("flower", lambda: http_get(f"{flower}/healthcheck")[0] == 200, 30, log)

    def worker_listed() -> bool:  # no ?refresh=1: the Procfile starts Flower after the worker
        status, body = http_get(f"{flower}/api/workers", AUTH)
        return status == 200 and WORKER in json.loads(body)

    wait_for("worker in /api/workers", worker_listed, 30, log)
    spec = make_spec([{"id": f"c{i}", "params": {"x": [i / 10, 0.0]}} for i in range(10)])
    generation = run_spec(spec, honcho.url, timeout_s=30)
    assert generation.wait(0) == "complete"

    status, _ = http_get(f"{flower}/api/workers")
    assert status == 401  # the API needs the basic-auth credentials
    assert http_get(f"{flower}/api/workers", "ops:wrong")[0] == 401
    status, body = http_get(f"{flower}/api/workers?refresh=1", AUTH)
    workers = json.loads(body)
    assert workers[WORKER]["stats"]["pool"]["max-concurrency"] == 2
    assert "evofleet.evaluate" in workers[WORKER]["registered"]

    # /metrics is unauthenticated (Prometheus scrapes it); counters per task name and event.
    succeeded = re.compile(
        r'flower_events_total\{task="evofleet\.evaluate",type="task-succeeded",'
        r'worker="' + re.escape(WORKER) + r'"\} (\d+(?:\.\d+)?)'
    )

    def counted() -> bool:
        match = succeeded.search(http_get(f"{flower}/metrics")[1])
        return match is not None and float(match.group(1)) >= 10

    wait_for("10 task-succeeded events in /metrics", counted, 10, log)
    metrics = http_get(f"{flower}/metrics")[1]
    for event in ("task-received", "task-started", "task-succeeded"):
        line = (f'flower_events_total{{task="evofleet.evaluate",type="{event}",'
                f'worker="{WORKER}"}} 10.0')
        assert line in metrics.splitlines(), event
    assert (f'flower_task_runtime_seconds_count{{task="evofleet.evaluate",worker="{WORKER}"}} 10.0'
            in metrics.splitlines())
    assert re.search(r'flower_events_total\{task="evofleet\.finalize_generation",'
                     r'type="task-succeeded",worker="' + re.escape(WORKER) + r'"\} 1\.0', metrics)
    assert len(descendants(honcho.process.pid)) >= 5  # redis, flower, worker + 2 pool children

    started = time.monotonic()
    code, orphans = honcho.stop(signal.SIGTERM)
    assert orphans == [], f"left running: {orphans}"
    assert time.monotonic() - started < 15
    assert code in (0, 130, -signal.SIGTERM, 128 + signal.SIGTERM), code
    stops = re.findall(r"(\w+)\.1 stopped \(rc=(-?\d+)\)", log.read_text())
    assert sorted(stops) == [("flower", "0"), ("redis", "0"), ("worker", "0")], stops
