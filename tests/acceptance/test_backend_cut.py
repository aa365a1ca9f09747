"""The result backend is cut off from a worker while the broker is not (a partition, a proxy
restart): a finished result waits in its pool child, and the hard time limit that kills the
child meanwhile does not turn the candidate into a ``timeout``."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestration.api import launch
from tests.acceptance.conftest import Cluster, wait_until
from tests.conftest import make_spec
from tests.fault_evaluators import runs
from workers.contract import EvaluationResult, Status
from workers.ledger import Ledger


class Relay:
    """A TCP relay to a local port; ``cut`` resets its connections and refuses new ones."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port))  # SO_REUSEADDR on POSIX
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
        if self._listener is not None:
            sockets.append(self._listener)
            self._listener = None
        for sock in sockets:
            _close(sock)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                if listener.fileno() == -1:
                    return
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(source, sink), daemon=True).start()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        _close(source)
        _close(sink)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in accept or recv
    except OSError:
        pass
    sock.close()


@pytest.fixture
def relayed_backend(tmp_path: Path) -> Iterator[tuple[Cluster, Relay]]:
    cluster = Cluster(tmp_path)
    relay = Relay(cluster.redis.port)
    backend = cluster.url.replace(f":{cluster.redis.port}/", f":{relay.port}/")
    try:
        cluster.start_worker("w1", concurrency=1, env={"EVOFLEET_RESULT_BACKEND": backend})
        yield cluster, relay
    finally:
        relay.cut()
        cluster.close()


def _run_with_backend_cut(
    cluster: Cluster, relay: Relay, log: Path, *, restore_after: str
) -> tuple[EvaluationResult, int]:
    """One 1 s candidate under a 4 s hard limit; the backend is cut while it runs and restored
    once the worker's log shows ``restore_after``. Returns its result and how often it ran."""
    spec = make_spec(
        [{"id": "c0", "params": {"seconds": 1.0, "log": str(log)}}],
        evaluator="tests.fault_evaluators:faulty", objectives={"f": "max"},
        soft_time_limit=3, time_limit=4, deadline=90,
    )
    generation = launch(spec, broker_url=cluster.url)
    wait_until(lambda: runs(log).get("c0"), 30, "the candidate to start")
    relay.cut()
    wait_until(lambda: restore_after in cluster.log("w1"), 20, repr(restore_after))
    relay.restore()
    assert generation.wait(60) == "complete"
    return next(Ledger(cluster.client, spec.id).iter_results()), runs(log)["c0"]


@pytest.mark.slow
def test_a_result_the_backend_takes_within_the_grace_is_kept(
    relayed_backend: tuple[Cluster, Relay], tmp_path: Path
) -> None:
    """The candidate finishes with the backend cut and its result waits past the hard limit;
    the backend is back within the main process's grace: the child records it, once."""
    result, ran = _run_with_backend_cut(*relayed_backend, tmp_path / "runs.log",
                                        restore_after="has 5s to record them")
    assert result.status is Status.ok, result.error
    assert (ran, result.attempts) == (1, 1)


@pytest.mark.slow
def test_a_result_still_waiting_after_the_grace_is_run_again_not_timed_out(
    relayed_backend: tuple[Cluster, Relay], tmp_path: Path
) -> None:
    """The backend stays cut past the grace: the main process re-queues the task (it once
    recorded ``timeout``, its own Redis reads outlasting the cut), the candidate runs again and
    is recorded ``ok``. The re-delivered task is not lost to Celery's dedup check either."""
    result, ran = _run_with_backend_cut(*relayed_backend, tmp_path / "runs.log",
                                        restore_after="re-queueing it to run again")
    assert result.status is Status.ok, result.error
    assert (ran, result.attempts) == (2, 2)  # a re-run counts, as a lost node's re-delivery does
