"""The result backend is cut off from a worker while the broker is not (a partition, a proxy
restart): a finished result waits in its pool child, and the hard time limit that kills the
child meanwhile does not turn the candidate into a ``timeout``."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestration.api import launch
from orchestration.local_cluster import free_port
from tests.acceptance.conftest import Cluster, wait_until
from tests.conftest import make_spec
from tests.fault_evaluators import runs
from workers.contract import EvaluationResult, Status
from workers.ledger import Ledger

RELAY = Path(__file__).parents[1] / "tcp_relay.py"


class Relay:
    """``tests/tcp_relay.py`` to a local port, in a process: ``cut`` kills it (its connections
    reset, new ones refused), ``restore`` starts it again on the same port."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.restore()

    def restore(self) -> None:
        self.process = subprocess.Popen([
            sys.executable, str(RELAY), "--listen", f"127.0.0.1:{self.port}",
            "--to", f"127.0.0.1:{self.target_port}", "--delay-ms", "0",
        ])
        wait_until(self._listening, 20, "the relay to listen")

    def cut(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True


@pytest.fixture
def relayed_backend(tmp_path: Path) -> Iterator[tuple[Cluster, Relay]]:
    cluster = Cluster(tmp_path)
    relay: Relay | None = None
    try:
        relay = Relay(cluster.redis.port)
        backend = cluster.url.replace(f":{cluster.redis.port}/", f":{relay.port}/")
        cluster.start_worker("w1", concurrency=1, env={"EVOFLEET_RESULT_BACKEND": backend})
        yield cluster, relay
    finally:
        if relay is not None:
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
