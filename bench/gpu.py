"""The ``gpu`` figure: ``python bench/gpu.py [--candidates N] [--cpu]``.

The ``mlp`` evaluator's candidates per second and the GPU's busy share (``nvidia-smi`` sampled
every 200 ms during the run) for K = 1, 2, 4, 8 pool children per GPU, one candidate per message
against chunks trained as one vectorised model. Without a GPU it says so and stops; ``--cpu``
runs the same cases on CPU children (K children in all), which only checks the script works.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from orchestration.api import launch  # noqa: E402
from orchestration.local_cluster import LocalRedis, stop_process_group  # noqa: E402
from workers.contract import GenerationSpec  # noqa: E402
from workers.keys import WORKER_SLOTS  # noqa: E402

EVOFLEET = str(Path(sys.executable).with_name("evofleet"))
SHAPES = ([64], [128, 64])  # a learning-rate and seed sweep over two architectures
CHUNK = 16  # candidates per message in the batched cases


def population(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` mlp candidates, grouped by shape so that a chunk holds one shape."""
    rng = random.Random(seed)
    rows = []
    for index in range(n):
        hidden = SHAPES[index * len(SHAPES) // n]
        params = {"hidden": hidden, "lr": rng.choice([1e-3, 3e-3, 1e-2]), "epochs": 10,
                  "batch_size": 64, "dropout": 0.0, "seed": rng.randrange(2**31)}
        rows.append({"id": f"m{index:05d}", "params": params})
    return rows


@contextmanager
def worker(url: str, per_gpu: int, *, cpu: bool, log: Path) -> Iterator[None]:
    """``evofleet worker``: every GPU with K children each, or K CPU children with --cpu."""
    hostname = f"gpubench-{per_gpu}@127.0.0.1"
    gpus = ["--gpus", "0", "--concurrency", str(per_gpu)] if cpu else [
        "--gpus", "auto", "--children-per-gpu", str(per_gpu)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVOFLEET_")}
    with log.open("ab") as out:
        process = subprocess.Popen([EVOFLEET, "worker", "--broker", url, "--hostname", hostname,
                                    "--loglevel", "WARNING", *gpus], cwd=ROOT, env=env,
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    client = redis.Redis.from_url(url)
    try:
        deadline = time.monotonic() + 120
        while not client.exists(WORKER_SLOTS.format(hostname=hostname)):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield
    finally:
        client.close()
        stop_process_group(process)


class BusySampler:
    """Samples ``nvidia-smi``'s utilization.gpu (percent, every GPU) in a thread."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu",
                                  "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=10).stdout
            values = [float(v) for v in out.split() if v.strip()]
            if values:
                self.samples.append(statistics.mean(values))

    def __enter__(self) -> BusySampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    @property
    def busy(self) -> float | None:
        return statistics.mean(self.samples) / 100 if self.samples else None


def run_case(url: str, rows: list[dict[str, Any]], chunk: int, *, gpu: bool) -> tuple[float, float | None]:
    """Candidates per second and the GPU busy share of one generation."""
    spec = GenerationSpec.model_validate({
        "evaluator": "mlp", "objectives": {"accuracy": "max"}, "candidates": rows,
        "chunk_size": chunk, "batch_size": 100, "batch_timeout": 0.5,
        "soft_time_limit": 600, "time_limit": 900,
    })
    sampler = BusySampler() if gpu else None
    started = time.perf_counter()
    if sampler is not None:
        sampler.__enter__()
    try:
        generation = launch(spec, broker_url=url)
        status = generation.wait(3600)
    finally:
        if sampler is not None:
            sampler.__exit__()
    wall = time.perf_counter() - started
    failed = [r for r in generation.results() if r.status.value != "ok"]
    if status != "complete" or failed:
        raise RuntimeError(f"{status}; {len(failed)} failed, e.g. {failed[:1]}")
    return len(rows) / wall, (sampler.busy if sampler else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=256, help="Population per case.")
    parser.add_argument("--cpu", action="store_true", help="No GPU: check the script on CPUs.")
    parser.add_argument("--k", type=int, nargs="+", default=[1, 2, 4, 8], help="Children per GPU.")
    args = parser.parse_args()
    gpu = shutil.which("nvidia-smi") is not None and not args.cpu
    if not gpu and not args.cpu:
        print("gpu figure: needs a GPU (nvidia-smi not found); --cpu checks the script on CPUs")
        return
    rows = population(args.candidates)
    server = LocalRedis().start()
    table: list[tuple[int, str, float, float | None]] = []
    try:
        for per_gpu in args.k:
            with worker(server.url, per_gpu, cpu=args.cpu, log=server.workdir / "worker.log"):
                for chunk, mode in ((1, "one by one"), (CHUNK, f"chunks of {CHUNK}, vmap")):
                    rate, busy = run_case(server.url, rows, chunk, gpu=gpu)
                    table.append((per_gpu, mode, rate, busy))
                    print(f"K={per_gpu} {mode}: {rate:.1f} candidates/s, busy {busy}", flush=True)
    finally:
        server.stop()
    base = {mode: rate for k, mode, rate, _ in table if k == args.k[0]}
    print(f"\ngpu figure: {len(rows)} mlp candidates ({'GPU' if gpu else 'CPU check'})\n")
    print("| K per GPU | messages | candidates/s | vs K=1 | GPU busy |")
    print("|---|---|---|---|---|")
    for per_gpu, mode, rate, busy in table:
        shown = "-" if busy is None else f"{busy:.0%}"
        print(f"| {per_gpu} | {mode} | {rate:.1f} | {rate / base[mode]:.2f}x | {shown} |")
    if gpu:
        best = max(table, key=lambda row: row[2])
        print(f"\ntargets: best case busy >= 90% ({best[3] or 0:.0%}); "
              f"K>1 >= 2x K=1 ({max(r / base[m] for k, m, r, _ in table if k > 1):.2f}x)")


if __name__ == "__main__":
    main()
