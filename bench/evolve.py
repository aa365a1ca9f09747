"""``python bench/evolve.py [--quick]``: a whole NSGA-II run through ``evofleet evolve`` vs pymoo serial.

Two figures, each against pymoo's own serial ``minimize`` measured in the same run:
1. overhead: ZDT1 at no evaluation cost (the built-in torch ``zdt1``), one worker with 2 pool
   children; ratio evofleet / serial (target <= 3x);
2. speed-up: the same with a 0.1 s evaluator and 4 pool children (target: >= 3x faster).
A private redis-server and ``celery worker`` are started once per figure and kept for the whole run
(as ``evofleet evolve`` does in local mode); the time is ``evolve()`` to the end of ``wait()``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import redis  # noqa: E402
from pymoo.algorithms.moo.nsga2 import NSGA2  # noqa: E402
from pymoo.core.problem import ElementwiseProblem  # noqa: E402
from pymoo.optimize import minimize  # noqa: E402
from pymoo.problems import get_problem  # noqa: E402

from bench.evolve_evaluators import SECONDS  # noqa: E402
from orchestration.evolve import evolve  # noqa: E402
from orchestration.local_cluster import LOCAL_WORKER_ENV, LocalRedis, LocalWorker  # noqa: E402


class SlowZDT1(ElementwiseProblem):
    """pymoo's ZDT1 one row at a time after SECONDS of sleep: the serial baseline of figure 2."""

    def __init__(self) -> None:
        super().__init__(n_var=30, n_obj=2, xl=0.0, xu=1.0)
        self.zdt1 = get_problem("zdt1")

    def _evaluate(self, x: Any, out: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        time.sleep(SECONDS)
        out["F"] = self.zdt1.evaluate(np.asarray(x)[None, :])[0]


def serial(problem: Any, generations: int, population: int) -> float:
    started = time.perf_counter()
    minimize(problem, NSGA2(pop_size=population), ("n_gen", generations), seed=1, verbose=False)
    return time.perf_counter() - started


def fleet(evaluator: str, generations: int, population: int, concurrency: int) -> dict[str, float]:
    """evofleet evolve on a kept cluster: total seconds and the median seconds per generation."""
    server = LocalRedis().start()
    worker = LocalWorker(server.url, concurrency=concurrency, env=LOCAL_WORKER_ENV,
                         hostname=f"bench-evolve-{server.port}@127.0.0.1")
    out = Path(tempfile.mkdtemp(prefix="evofleet-bench-evolve-"))
    try:
        worker.start()
        client = redis.Redis.from_url(server.url)
        worker.wait_ready(client, 120)
        client.close()
        spec = {
            "id": f"bench-{server.port}", "evaluator": evaluator, "objectives": {"f1": "min", "f2": "min"},
            "search_space": {"n_var": 30, "low": 0, "high": 1}, "generations": generations,
            "population_size": population, "seed": 1, "reference_point": [1.1, 1.1],
            "plot_every": 0, "batch_timeout": 0.05, "chunk_size": "auto",
        }
        started = time.perf_counter()
        run = evolve(spec, broker_url=server.url, output=out / "run")
        run.wait(3600)
        total = time.perf_counter() - started
        per_generation = statistics.median(r["elapsed_s"] for r in run.history)
        return {"total": total, "per_generation": per_generation}
    finally:
        worker.stop(timeout_s=10)
        server.stop()
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer generations (a smoke run)")
    args = parser.parse_args()
    cheap = (10, 100) if args.quick else (50, 100)
    slow = (3, 40) if args.quick else (10, 40)
    rows = []

    base = serial(get_problem("zdt1"), *cheap)
    ours = fleet("zdt1", *cheap, concurrency=2)
    rows.append((f"overhead: NSGA-II ZDT1 {cheap[0]} gen x {cheap[1]}, no-cost evaluator, 2 children",
                 ours, base, f"{ours['total'] / base:.1f}x slower", "<= 3x"))
    base = serial(SlowZDT1(), *slow)
    ours = fleet("bench.evolve_evaluators:slow_zdt1", *slow, concurrency=4)
    rows.append((f"speed-up: {slow[0]} gen x {slow[1]}, {SECONDS} s evaluator, 4 children",
                 ours, base, f"{base / ours['total']:.1f}x faster", ">= 3x faster"))

    print("| figure | evofleet evolve (total; median per generation) | pymoo serial | ratio | target |")
    print("|---|---|---|---|---|")
    for figure, ours, base, ratio, target in rows:
        print(f"| {figure} | {ours['total']:.1f} s; {ours['per_generation'] * 1000:.0f} ms | "
              f"{base:.2f} s | {ratio} | {target} |")


if __name__ == "__main__":
    main()
