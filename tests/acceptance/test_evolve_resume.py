"""`evofleet evolve` SIGKILLed at generation 7 of 15, then `--resume`: the same final population."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.optimize import minimize as pymoo_minimize
from pymoo.problems import get_problem

from orchestration.evolve.store import RunStore
from tests.acceptance.conftest import Cluster, wait_until
from tests.conftest import unique_id

EVOFLEET = str(Path(sys.executable).parent / "evofleet")
ROOT = Path(__file__).resolve().parents[2]
GENERATIONS, POPULATION, SEED, KILL_AT = 15, 20, 5, 7


def _completed(store: RunStore) -> int:
    try:
        return store.completed()
    except (OSError, ValueError, KeyError):
        return 0


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_resume_after_sigkill_ends_with_the_uninterrupted_population(
    cluster: Cluster, tmp_path: Path
) -> None:
    run_id = unique_id("resume")
    spec = {
        # 0.1 s a candidate, so the run is still going when the kill lands: at no cost, the
        # generations after the 7th could all end first (seen once in a loaded run).
        "id": run_id, "evaluator": "tests.pymoo_evaluators:slow_zdt1", "true_front": "zdt1",
        "objectives": {"f1": "min", "f2": "min"}, "search_space": {"n_var": 30, "low": 0, "high": 1},
        "generations": GENERATIONS, "population_size": POPULATION, "seed": SEED,
        "reference_point": [1.1, 1.1], "batch_timeout": 0.1, "plot_every": 5,
    }
    spec_path = tmp_path / "run.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    env = {**os.environ, "EVOFLEET_BROKER_URL": cluster.url, "PYTHONPATH": str(ROOT)}
    log = tmp_path / "launcher.log"
    with log.open("wb") as output:
        launcher = subprocess.Popen([EVOFLEET, "evolve", str(spec_path), "--out", str(out), "--quiet"],
                                    env=env, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)
    store = RunStore(out)
    try:
        wait_until(lambda: _completed(store) >= KILL_AT or launcher.poll() is not None, 120,
                   f"the checkpoint of generation {KILL_AT}")
        launcher.send_signal(signal.SIGKILL)
        launcher.wait(10)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    killed_at = store.completed()
    assert KILL_AT <= killed_at < GENERATIONS, log.read_text()
    assert not (out / "final_population.parquet").exists()

    resumed = subprocess.run([EVOFLEET, "evolve", "--resume", str(out), "--quiet"], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    population = store.read_population()
    serial = pymoo_minimize(get_problem("zdt1"), NSGA2(pop_size=POPULATION), ("n_gen", GENERATIONS),
                            seed=SEED, verbose=False).pop
    assert np.array_equal(population["X"], serial.get("X"))
    assert np.array_equal(population["F"], serial.get("F"))
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [r["generation"] for r in history] == list(range(GENERATIONS))  # each exactly once
    assert store.completed() == GENERATIONS
    assert (out / "report.html").exists()
