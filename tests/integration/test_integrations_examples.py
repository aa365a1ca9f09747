"""The runnable examples under examples/ run to the end (small sizes)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestration.local_cluster import local_cluster

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def cluster_url() -> Iterator[str]:
    """A deployment stand-in the examples reach through EVOFLEET_BROKER_URL (one cluster
    start for all but the local-mode run)."""
    with local_cluster(workers=1, concurrency=2) as url:
        yield url


def run_example(name: str, broker_url: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVOFLEET_")}
    if broker_url is not None:
        env["EVOFLEET_BROKER_URL"] = broker_url
    done = subprocess.run([sys.executable, "-m", f"examples.{name}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_nevergrad_example_in_local_mode() -> None:
    out = run_example("nevergrad_executor", broker_url=None)
    x = [float(v) for v in re.findall(r"best x: \[(\S+), (\S+)\]", out)[0]]
    assert x == pytest.approx([0.5, -0.3], abs=0.1)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("deap_map", r"best per generation: \[(\d+\.0, ){5}\d+\.0\]"),
        ("optuna_batches", r"16 trials, best \d"),
        ("gepa_fleet", r"best score 1\.00"),
    ],
)
def test_example_against_a_deployment(cluster_url: str, name: str, expected: str) -> None:
    assert re.search(expected, run_example(name, cluster_url))
