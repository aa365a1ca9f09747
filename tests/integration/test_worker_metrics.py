"""``evofleet worker --metrics-port``: the worker's own Prometheus metrics, summed over its pool
children (ok, error and crashed results), its lost children, running candidates and queue depth."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from orchestration.api import launch
from orchestration.local_cluster import LocalRedis, free_port
from tests.conftest import make_spec
from tests.integration.test_worker_cli import evofleet_worker

pytestmark = pytest.mark.slow
FAULTY = "tests.fault_evaluators:faulty"


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``/metrics`` parsed: (sample name, sorted labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def wait_for_sample(port: int, name: str, labels: dict[str, str], expected: float,
                    timeout_s: float = 60) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    deadline = time.monotonic() + timeout_s
    while True:
        samples = scrape(port)
        if value(samples, name, **labels) == expected:
            return samples
        assert time.monotonic() < deadline, (
            f"{name}{labels} != {expected} within {timeout_s}s: {value(samples, name, **labels)}")
        time.sleep(0.2)


def test_worker_metrics_count_results_by_status(private_redis: LocalRedis, tmp_path: Path) -> None:
    port = free_port()
    url = private_redis.url
    candidates = [
        {"id": "ok-normal", "params": {"value": 1.0}},
        {"id": "ok-high", "priority": "high", "params": {"seconds": 3.0}},
        {"id": "ok-critical", "priority": "critical", "params": {}},
        {"id": "error-normal", "params": {"value": "nan"}},  # a score that is not finite
        {"id": "error-critical", "priority": "critical", "params": {"value": "nan"}},
        {"id": "crash-normal", "params": {"mode": "kill"}},
    ]
    spec = make_spec(candidates, evaluator=FAULTY, objectives={"f": "min"}, crash_retries=0,
                     chunk_size=1)
    # The worker leaves `low` alone, so a low generation's messages stay queued to be counted.
    with evofleet_worker(url, "metrics@127.0.0.1", "--gpus", "0", "--concurrency", "2",
                         "--queues", "critical,high,normal", "--metrics-port", str(port),
                         log=tmp_path / "worker.log"):
        generation = launch(spec, broker_url=url)
        try:
            wait_for_sample(port, "evofleet_candidates_running", {}, 1.0)  # ok-high sleeping
            assert generation.wait(90) == "complete"
        finally:
            generation.cancel()  # a no-op once it ended; else the collector thread stops
            generation.wait(30)
        counts = {r.candidate_id: r.status.value for r in generation.results()}
        assert counts == {c["id"]: c["id"].split("-")[0].replace("crash", "crashed")
                          for c in candidates}

        samples = scrape(port)
        results = {
            (dict(labels)["status"], dict(labels)["priority"]): count
            for (name, labels), count in samples.items() if name == "evofleet_results_total"
        }
        assert results == {
            ("ok", "normal"): 1, ("ok", "high"): 1, ("ok", "critical"): 1,
            ("error", "normal"): 1, ("error", "critical"): 1, ("crashed", "normal"): 1,
        }
        assert value(samples, "evofleet_lost_children_total", reason="died") == 1
        assert value(samples, "evofleet_candidates_running") == 0
        # Five evaluations started and ended in a pool child (the crashed one never ended).
        assert value(samples, "evofleet_evaluation_seconds_count") == 5
        assert value(samples, "evofleet_evaluation_seconds_bucket", le="1.0") == 4
        assert value(samples, "evofleet_evaluation_seconds_sum") >= 3.0  # type: ignore[operator]

        low = make_spec([{"id": f"low{i}", "priority": "low"} for i in range(3)], chunk_size=1)
        queued = launch(low, broker_url=url)
        try:
            samples = wait_for_sample(port, "evofleet_queue_depth", {"priority": "low"}, 3.0)
            for priority in ("critical", "high", "normal"):
                assert value(samples, "evofleet_queue_depth", priority=priority) == 0
        finally:
            queued.cancel()
            assert queued.wait(30) == "cancelled"
