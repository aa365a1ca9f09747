"""A fleet of hosts in network namespaces: Redis, worker nodes and a launcher on one bridge.

Everything it makes carries a prefix unique to this process (``evfnet-<pid>-<hex>`` for
namespaces, ``ef<hex>`` for interfaces); the bridge lives in a namespace of its own, so the
host's interfaces, routes and firewall are never touched, and deleting the namespaces removes
every link. Processes run with ``ip netns exec``; the test itself reaches Redis from a thread
that joined the Redis namespace (``Fabric.call``).
"""

from __future__ import annotations

import atexit
import ctypes
import os
import random
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, TypeVar

import redis

from orchestration.local_cluster import find_redis_server
from tests.acceptance.conftest import wait_until
from workers.keys import WORKER_SLOTS

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
NETNS_DIR = Path("/run/netns")
NS_PREFIX = "evfnet-"
CLONE_NEWNET = 0x40000000
REDIS_PORT = 6379
RELAY_PORT = 6380
PASSWORD = "evf-multihost-pw"
# The last octet of each host's address; the bridge itself has none.
HOST_OCTETS = {"redis": 2, "node1": 11, "node2": 12, "node3": 13, "launcher": 20}
_LIVE: list[Fabric] = []


def _sbin(name: str) -> str | None:
    """A system tool, also where a non-login PATH leaves out /usr/sbin."""
    return shutil.which(name) or next(
        (path for path in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.access(path, os.X_OK)), None
    )


IP = _sbin("ip") or "ip"


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([IP, *args], check=check, capture_output=True, text=True, timeout=30)


def unavailable_reason() -> str | None:
    """Why this machine cannot build a fabric (None when it can)."""
    if os.geteuid() != 0:
        return "multihost tests need root (ip netns)"
    if _sbin("ip") is None:
        return "multihost tests need iproute2's `ip`"
    probe = f"{NS_PREFIX}{os.getpid()}-probe"
    try:
        made = ip("netns", "add", probe, check=False)
        if made.returncode != 0:
            return f"`ip netns add` fails here: {made.stderr.strip()}"
    finally:
        ip("netns", "del", probe, check=False)
    return None


def sweep_stale() -> None:
    """Delete namespaces an earlier run left behind (its pid is gone): a SIGKILLed pytest."""
    pattern = re.compile(rf"^{NS_PREFIX}(\d+)-")
    for entry in NETNS_DIR.glob(f"{NS_PREFIX}*") if NETNS_DIR.exists() else []:
        match = pattern.match(entry.name)
        if match and not Path(f"/proc/{match[1]}").exists():
            _kill_namespace_pids(entry.name)
            ip("netns", "del", entry.name, check=False)


def _kill_namespace_pids(namespace: str) -> None:
    listed = ip("netns", "pids", namespace, check=False).stdout.split()
    for pid in listed:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def _pick_subnet() -> str:
    """A 10.213.X.0/24 no interface of this host uses (ours live in private namespaces anyway)."""
    used = ip("-4", "addr").stdout
    for _ in range(100):
        third = random.randint(1, 254)
        if f"10.213.{third}." not in used:
            return f"10.213.{third}"
    raise RuntimeError("no free 10.213.X.0/24 subnet")


class Fabric:
    """Namespaces on one bridge, the processes started in them, and how to cut their links."""

    def __init__(self, workdir: Path, hosts: Sequence[str] = ("redis", "node1", "node2", "launcher")) -> None:
        self.workdir = workdir
        self.tag = f"{random.randrange(16**4):04x}"
        self.prefix = f"{NS_PREFIX}{os.getpid()}-{self.tag}"
        self.net = _pick_subnet()
        self.switch = f"{self.prefix}-sw"
        self.bridge = f"ef{self.tag}br"
        self.namespaces: list[str] = []
        self.hosts: list[str] = []
        self.processes: list[subprocess.Popen[bytes]] = []
        self._logs: list[IO[bytes]] = []
        self._callers: dict[str, ThreadPoolExecutor] = {}
        self.redis_process: subprocess.Popen[bytes] | None = None
        self.relay_process: subprocess.Popen[bytes] | None = None
        self.latency_method = "none"
        self._client: redis.Redis | None = None
        _LIVE.append(self)
        try:
            self._add_namespace(self.switch)
            ip("-n", self.switch, "link", "add", self.bridge, "type", "bridge")
            ip("-n", self.switch, "link", "set", self.bridge, "up")
            for host in hosts:
                self.add_host(host)
        except BaseException:
            self.close()
            raise

    # -- topology ---------------------------------------------------------------
    def ns(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def addr(self, host: str) -> str:
        return f"{self.net}.{HOST_OCTETS[host]}"

    def _add_namespace(self, name: str) -> None:
        ip("netns", "add", name)
        self.namespaces.append(name)
        ip("-n", name, "link", "set", "lo", "up")

    def _port(self, host: str) -> str:
        """The bridge-side end of a host's cable (in the switch namespace)."""
        return f"ef{self.tag}p{HOST_OCTETS[host]}"

    def add_host(self, host: str) -> None:
        """A namespace with one veth cable to the bridge and its address."""
        ns = self.ns(host)
        self._add_namespace(ns)
        inside = f"ef{self.tag}h{HOST_OCTETS[host]}"
        # Both ends are created straight inside our namespaces: nothing appears on the host.
        ip("link", "add", inside, "netns", ns, "type", "veth", "peer", "name", self._port(host),
           "netns", self.switch)
        ip("-n", self.switch, "link", "set", self._port(host), "master", self.bridge)
        ip("-n", self.switch, "link", "set", self._port(host), "up")
        ip("-n", ns, "addr", "add", f"{self.addr(host)}/24", "dev", inside)
        ip("-n", ns, "link", "set", inside, "up")
        self.hosts.append(host)

    def cut(self, host: str) -> None:
        """Partition: unplug the host's cable from the bridge. Both ends stay up, packets are
        silently dropped (no RST, no carrier loss), as when a rack's uplink fails."""
        ip("-n", self.switch, "link", "set", self._port(host), "nomaster")

    def heal(self, host: str) -> None:
        ip("-n", self.switch, "link", "set", self._port(host), "master", self.bridge)

    # -- processes --------------------------------------------------------------
    def spawn(
        self, host: str, argv: Sequence[str], *, log: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Run ``argv`` inside ``host``'s namespace, in a session of its own, output to a log."""
        out = open(self.workdir / log, "ab")
        self._logs.append(out)
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        process = subprocess.Popen(
            [IP, "netns", "exec", self.ns(host), *argv], env=full_env, cwd=ROOT,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.processes.append(process)
        return process

    def log(self, name: str) -> str:
        path = self.workdir / name
        return path.read_text(errors="replace") if path.exists() else ""

    def call(self, host: str, fn: Callable[[], T], timeout_s: float = 60.0) -> T:
        """Run ``fn`` in a thread that joined ``host``'s namespace: the sockets it opens live there."""
        if host not in self._callers:
            self._callers[host] = ThreadPoolExecutor(
                1, thread_name_prefix=f"netns-{host}", initializer=_enter_namespace,
                initargs=(self.ns(host),),
            )
        return self._callers[host].submit(fn).result(timeout_s)

    # -- Redis ------------------------------------------------------------------
    def redis_url(self, *, port: int = REDIS_PORT) -> str:
        return f"redis://:{PASSWORD}@{self.addr('redis')}:{port}/0"

    def start_redis(self, timeout_s: float = 20.0) -> None:
        """redis-server in the ``redis`` namespace: password, AOF (fsync every second)."""
        data = self.workdir / "redis-data"
        data.mkdir(exist_ok=True)
        self.redis_process = self.spawn("redis", [
            find_redis_server(), "--port", str(REDIS_PORT),
            "--bind", self.addr("redis"), "127.0.0.1", "--requirepass", PASSWORD,
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            "--dir", str(data), "--tcp-keepalive", "60", "--loglevel", "notice",
        ], log="redis.log")
        process = self.redis_process

        def answers() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.log('redis.log')[-1500:]}")
            return self.redis_ping()
        wait_until(answers, timeout_s, "redis-server to answer")

    def stop_redis(self) -> None:
        """Shut Redis down as a host's shutdown would (SIGTERM: AOF flushed, clients closed)."""
        if self.redis_process is not None:
            self.redis_process.terminate()
            self.redis_process.wait(timeout=20)
            self.redis_process = None

    def redis(self) -> redis.Redis:
        """A client for the test's own use, living in the Redis host's namespace."""
        if self._client is None:
            self._client = redis.Redis.from_url(
                f"redis://:{PASSWORD}@127.0.0.1:{REDIS_PORT}/0", socket_timeout=10,
                socket_connect_timeout=2,
            )
        return self._client

    def redis_ping(self) -> bool:
        try:
            return bool(self.call("redis", self.redis().ping))
        except redis.RedisError:
            return False

    def add_latency(self, delay_ms: float, jitter_ms: float) -> str:
        """Delay every link; returns the broker URL to use.

        Uses ``tc netem`` on each host's cable when the kernel has it; otherwise (no
        CONFIG_NET_SCH_NETEM) a relay on the Redis host delays each direction of every
        connection by ``delay_ms`` +- ``jitter_ms``, keeping byte order as TCP does.
        """
        if self._netem_works():
            for host in self.hosts:
                ip("netns", "exec", self.ns(host), _sbin("tc") or "tc", "qdisc", "replace", "dev",
                   f"ef{self.tag}h{HOST_OCTETS[host]}", "root", "netem", "delay",
                   f"{delay_ms}ms", f"{jitter_ms}ms")
            self.latency_method = "tc netem on every cable"
            return self.redis_url()
        self.relay_process = self.spawn("redis", [
            sys.executable, str(Path(__file__).parents[1] / "tcp_relay.py"),
            "--listen", f"{self.addr('redis')}:{RELAY_PORT}", "--to", f"127.0.0.1:{REDIS_PORT}",
            "--delay-ms", str(delay_ms), "--jitter-ms", str(jitter_ms),
        ], log="relay.log")
        self.latency_method = "userspace relay on the Redis host (this kernel has no netem)"
        url = self.redis_url(port=RELAY_PORT)
        wait_until(lambda: self._relay_answers(), 20, "the delay relay")
        return url

    def _relay_answers(self) -> bool:
        def ping() -> bool:
            client = redis.Redis(host=self.addr("redis"), port=RELAY_PORT, password=PASSWORD,
                                 socket_timeout=2, socket_connect_timeout=1)
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False
            finally:
                client.close()
        return self.call("launcher", ping)

    def _netem_works(self) -> bool:
        tc = _sbin("tc")
        if tc is None:
            return False
        probe = ip("netns", "exec", self.switch, tc, "qdisc", "add", "dev", "lo", "root",
                   "netem", "delay", "1ms", check=False)
        ip("netns", "exec", self.switch, tc, "qdisc", "del", "dev", "lo", "root", check=False)
        return probe.returncode == 0

    # -- workers ----------------------------------------------------------------
    def start_worker(
        self, host: str, url: str, *, concurrency: int = 2, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """``evofleet worker`` on ``host`` (CPU, ``concurrency`` children), hostname ``host@...``."""
        return self.spawn(host, [
            str(Path(sys.executable).with_name("evofleet")), "worker", "--gpus", "0",
            "--concurrency", str(concurrency), "--hostname", self.worker_name(host),
            "--broker", url, "--loglevel", "INFO",
        ], log=f"{host}.log", env=env)

    def worker_name(self, host: str) -> str:
        return f"{host}@{self.prefix}"

    def wait_worker(self, host: str, process: subprocess.Popen[bytes], timeout_s: float = 90.0) -> None:
        key = WORKER_SLOTS.format(hostname=self.worker_name(host))

        def ready() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"worker on {host} exited {process.returncode}: "
                                   f"{self.log(host + '.log')[-2000:]}")
            return bool(self.call("redis", lambda: self.redis().exists(key)))
        wait_until(ready, timeout_s, f"the worker on {host}")

    # -- helpers ----------------------------------------------------------------
    def close(self) -> None:
        """Stop every process, delete every namespace (and with them every link). Idempotent."""
        for process in self.processes:
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait(timeout=10)
        self.processes.clear()
        if self._client is not None:  # else its socket is a ResourceWarning in some later test
            self._client.close()
            self._client = None
        for caller in self._callers.values():
            caller.shutdown(wait=False, cancel_futures=True)
        self._callers.clear()
        for namespace in reversed(self.namespaces):
            _kill_namespace_pids(namespace)  # anything a process of ours left behind there
            ip("netns", "del", namespace, check=False)
        self.namespaces.clear()
        for out in self._logs:
            out.close()
        self._logs.clear()
        if self in _LIVE:
            _LIVE.remove(self)


def _enter_namespace(namespace: str) -> None:
    """Move the calling thread (only it) into a named network namespace."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(NETNS_DIR / namespace, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns({namespace})")
    finally:
        os.close(fd)


@atexit.register
def _close_all() -> None:
    """Backstop for an interpreter that exits without running the fixtures' finalizers."""
    for fabric in list(_LIVE):
        fabric.close()
