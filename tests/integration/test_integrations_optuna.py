"""Optuna's ask/tell on a real local cluster: batches are generations, crashes are FAIL trials."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from orchestration.integrations.optuna import optimize
from orchestration.local_cluster import local_cluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def cluster_url() -> Iterator[str]:
    """One local cluster (1 worker, 2 pool children) for every study of this module."""
    with local_cluster(workers=1, concurrency=2) as url:
        yield url


def test_nsga2_runs_40_trials_in_batches_and_a_crashing_trial_fails(cluster_url: str) -> None:
    study = optuna.create_study(
        directions=["minimize", "minimize"],
        sampler=optuna.samplers.NSGAIISampler(population_size=8, seed=1),
    )

    def space(trial: optuna.Trial) -> dict[str, Any]:
        return {"x": trial.suggest_float("x", -1.0, 3.0), "y": trial.suggest_float("y", -1.0, 1.0),
                "die_on_trial": 13}

    told = optimize(
        study, "tests.integration_functions:two_objectives", space, n_trials=40, batch_size=8,
        objectives=["f1", "f2"], broker_url=cluster_url, generation_options={"crash_retries": 0},
    )

    assert len(told) == len(study.trials) == 40
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert [t.number for t in failed] == [13]
    assert failed[0].user_attrs["evofleet_status"] == "crashed"
    assert "SIGKILL" in failed[0].user_attrs["evofleet_error"]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 39
    for trial in complete:
        x, y = trial.params["x"], trial.params["y"]
        assert trial.values == pytest.approx([x * x + y * y, (x - 2) ** 2 + y * y])
    assert len({t.user_attrs["evofleet_generation"] for t in study.trials}) == 5
    assert study.best_trials  # a Pareto front exists


def test_launchers_share_a_study_in_sqlite_storage(cluster_url: str, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(study_name="shared", storage=storage,
                        sampler=optuna.samplers.TPESampler(seed=0))
    errors: list[BaseException] = []

    def launcher() -> None:
        try:
            study = optuna.load_study(study_name="shared", storage=storage)
            optimize(study, "tests.integration_functions:parabola",
                     {"x": FloatDistribution(-4.0, 4.0)}, n_trials=12, batch_size=4,
                     broker_url=cluster_url)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=launcher) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)
    assert not errors
    study = optuna.load_study(study_name="shared", storage=storage)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == len(study.trials) == 24
    for trial in complete:
        assert trial.value == pytest.approx((trial.params["x"] - 1.0) ** 2)
    assert study.best_value < 1.0
