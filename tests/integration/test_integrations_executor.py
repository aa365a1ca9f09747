"""FleetExecutor on a real local cluster: the Executor interface, Nevergrad, DEAP, bad input."""

from __future__ import annotations

import concurrent.futures
import functools
import random
import time
from collections.abc import Iterator

import nevergrad as ng
import numpy as np
import pytest
from deap import algorithms, base, creator, tools

from orchestration.integrations.executor import EvaluationFailed, FleetExecutor
from orchestration.local_cluster import local_cluster
from tests import integration_functions as fns

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def cluster_url() -> Iterator[str]:
    """One local cluster (1 worker, 2 pool children) for the whole module."""
    with local_cluster(workers=1, concurrency=2) as url:
        yield url


@pytest.fixture(scope="module")
def executor(cluster_url: str) -> Iterator[FleetExecutor]:
    with FleetExecutor(cluster_url, generation_options={"crash_retries": 0}) as ex:
        yield ex


def test_submit_returns_json_results_and_futures_work_with_wait_and_as_completed(
    executor: FleetExecutor,
) -> None:
    futures = [executor.submit(fns.square, float(i)) for i in range(6)]
    futures.append(executor.submit(fns.describe, (1, 2, 3), label="t"))
    futures.append(executor.submit(functools.partial(fns.add, 2.0), b=np.float64(0.5)))
    done, not_done = concurrent.futures.wait(futures, timeout=60)
    assert not not_done and len(done) == 8
    assert [f.result() for f in futures[:6]] == [float(i * i) for i in range(6)]
    assert futures[6].result() == {"label": "t", "n": 3, "total": 6}
    assert futures[7].result() == 2.5
    more = {executor.submit(fns.slow_echo, i, 0.05): i for i in range(4)}
    echoed = {more[f]: f.result() for f in concurrent.futures.as_completed(more, timeout=60)}
    assert echoed == {0: 0, 1: 1, 2: 2, 3: 3}


def test_failed_calls_raise_evaluation_failed_with_their_result(
    executor: FleetExecutor, cluster_url: str
) -> None:
    error = executor.submit(fns.fail, "boom")
    crashed = executor.submit(fns.kill_worker)
    bad_return = executor.submit(fns.not_json)
    fine = executor.submit(fns.square, 3.0)
    with pytest.raises(EvaluationFailed, match="ValueError: boom") as raised:
        error.result(timeout=60)
    assert raised.value.result.status == "error" and raised.value.result.attempts == 1
    with pytest.raises(EvaluationFailed) as raised:
        crashed.result(timeout=60)
    assert raised.value.status == "crashed" and raised.value.result.error is not None
    assert raised.value.result.error.signal == "SIGKILL"
    with pytest.raises(EvaluationFailed, match="is a set, which is not JSON"):
        bad_return.result(timeout=60)
    assert fine.result(timeout=60) == 9.0
    with FleetExecutor(cluster_url, on_error=None) as lenient:
        assert list(lenient.map(fns.fail, ["a", "b"], timeout=60)) == [None, None]


def test_map_of_10000_items_is_one_generation_in_input_order(cluster_url: str) -> None:
    with FleetExecutor(cluster_url) as ex:
        results = list(ex.map(fns.add, range(10_000), range(10_000), timeout=240))
        assert results == [2 * i for i in range(10_000)]
        assert len(ex.generation_ids) == 1


def test_bad_input_is_a_clear_error_at_submit(executor: FleetExecutor) -> None:
    def nested(x: float) -> float:
        return x

    with pytest.raises(TypeError, match="lambda"):
        executor.submit(lambda x: x, 1)
    with pytest.raises(TypeError, match="defined inside a function"):
        executor.submit(nested, 1)
    with pytest.raises(TypeError, match=r"must be JSON .*args\[0\] is a object"):
        executor.submit(fns.square, object())
    with pytest.raises(TypeError, match=r"kwargs.b is nan"):
        executor.submit(fns.add, 1.0, b=float("nan"))
    nested.__qualname__, nested.__module__ = "nested", "tests.no_such_module"
    with pytest.raises(ValueError, match=r"tests\.no_such_module:nested does not import"):
        executor.submit(nested, 1)
    with pytest.raises(TypeError, match="lambda"):
        executor.map(lambda x: x, [1, 2])


def test_a_pending_call_can_be_cancelled_and_map_times_out(cluster_url: str) -> None:
    with FleetExecutor(cluster_url, gather_s=1.0) as ex:
        cancelled = ex.submit(fns.square, 1.0)
        assert cancelled.cancel()  # still gathering: never launched
        kept = ex.submit(fns.square, 2.0)
        assert kept.result(timeout=60) == 4.0 and cancelled.cancelled()
        with pytest.raises(concurrent.futures.TimeoutError):
            list(ex.map(fns.slow_echo, [1], [2.0], timeout=0.5))


def test_shutdown_cancels_what_has_not_started(cluster_url: str) -> None:
    ex = FleetExecutor(cluster_url, generation_options={"chunk_size": 1})
    futures = [ex.submit(fns.slow_echo, i, 0.5) for i in range(12)]
    time.sleep(1.0)  # the generation is launched and its first calls run
    started = time.monotonic()
    ex.shutdown(wait=True, cancel_futures=True)
    assert time.monotonic() - started < 30
    outcomes = []
    for future in futures:
        try:
            outcomes.append(future.result(timeout=0))
        except EvaluationFailed as failed:
            outcomes.append(failed.status.value)
    assert "cancelled" in outcomes and any(isinstance(o, int) for o in outcomes)
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(fns.square, 1.0)


# nevergrad's own pacing (ngtools.Sleeper) warns when a batch is done before it started timing.
@pytest.mark.filterwarnings("ignore:Ignoring since timer was stopped:UserWarning")
def test_nevergrad_minimize_with_the_executor_reaches_the_optimum(executor: FleetExecutor) -> None:
    optimizer = ng.optimizers.OnePlusOne(parametrization=ng.p.Array(shape=(2,)), budget=160,
                                    num_workers=8)
    optimizer.parametrization.random_state = np.random.RandomState(0)
    recommendation = optimizer.minimize(fns.shifted_sphere, executor=executor, batch_mode=True)
    assert recommendation.value == pytest.approx([0.5, -0.3], abs=0.05)


def test_deap_ea_simple_runs_5_generations_through_map(executor: FleetExecutor) -> None:
    if not hasattr(creator, "FitnessMaxFleet"):
        creator.create("FitnessMaxFleet", base.Fitness, weights=(1.0,))
        creator.create("IndividualFleet", list, fitness=creator.FitnessMaxFleet)
    random.seed(3)
    toolbox = base.Toolbox()
    toolbox.register("bit", random.randint, 0, 1)
    toolbox.register("individual", tools.initRepeat, creator.IndividualFleet, toolbox.bit, 30)
    toolbox.register("population", tools.initRepeat, list, toolbox.individual)
    toolbox.register("evaluate", fns.onemax)
    toolbox.register("mate", tools.cxTwoPoint)
    toolbox.register("mutate", tools.mutFlipBit, indpb=0.05)
    toolbox.register("select", tools.selTournament, tournsize=3)
    toolbox.register("map", executor.map)
    before = len(executor.generation_ids)
    stats = tools.Statistics(lambda ind: ind.fitness.values[0])
    stats.register("max", max)
    population, logbook = algorithms.eaSimple(
        toolbox.population(n=24), toolbox, cxpb=0.5, mutpb=0.2, ngen=5, stats=stats, verbose=False
    )
    assert [entry["gen"] for entry in logbook] == [0, 1, 2, 3, 4, 5]
    assert len(executor.generation_ids) - before == 6  # the first population, then one per generation
    for individual in population:
        assert individual.fitness.values == (sum(individual),)
    assert logbook[-1]["max"] >= logbook[0]["max"]
