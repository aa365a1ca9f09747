"""Artifact figures: ``python bench/artifacts.py [--quick] [--reps N]``.

6. throughput: candidates each writing a 1 MB tensor to a ``file://`` store through evofleet,
   vs the same bytes (the same tensors, safetensors-encoded) written by a plain loop.
7. Redis memory per recorded result whose outputs are 64 KiB of JSON (the default inline limit).

Same set-up as ``bench/run.py``: a private redis-server, one worker with 2 pool children.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from bench.run import CONCURRENCY, Row, evofleet_worker, print_table, run_generation, spec_for  # noqa: E402
from orchestration.local_cluster import LocalRedis  # noqa: E402
from workers.keys import GenerationKeys  # noqa: E402

TENSOR_MB = 1.0
OUTPUT_BYTES = 64 * 1024


def plain_loop(n: int, folder: Path) -> float:
    """What a user without evofleet would do: make each tensor, encode it, write a file."""
    import torch
    from safetensors.torch import save

    started = time.perf_counter()
    for index in range(n):
        tensor = torch.full((int(TENSOR_MB * 262144),), 0.5)
        data = save({"tensor": tensor})
        target = folder / f"c{index}" / "weights"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        hashlib.sha256(data).hexdigest()  # evofleet records each artifact's digest
    return time.perf_counter() - started


def throughput(server: LocalRedis, n: int, reps: int, log_dir: Path) -> list[Row]:
    rows = {chunk: Row("6 artifacts", f"evofleet, {n:,} candidates x 1 MB tensor, chunk_size={chunk}",
                       "s", per_s=n, target="<= 1.5x loop" if chunk == 1 else "")
            for chunk in (1, "auto")}
    loop = Row("6 artifacts", f"plain loop writing the same {n:,} safetensors files", "s", per_s=n)
    ratio = {chunk: Row("6 artifacts", f"  evofleet / loop, chunk_size={chunk}", "x") for chunk in rows}
    scratch = Path(tempfile.mkdtemp(prefix="evofleet-bench-artifacts-", dir=os.environ.get("BENCH_DIR")))
    try:
        with evofleet_worker(server, log_dir):
            for _ in range(reps):
                baseline = plain_loop(n, scratch / "loop")
                loop.values.append(baseline)
                shutil.rmtree(scratch / "loop")
                for chunk, row in rows.items():
                    store = scratch / "store"
                    spec = spec_for(n, evaluator="tests.artifact_evaluators:one_tensor",
                                    chunk_size=chunk, params={"mb": TENSOR_MB},
                                    artifact_store=store.as_uri())
                    wall, generation = run_generation(server.url, spec)
                    assert all(r.status.value == "ok" and r.artifacts for r in generation.results())
                    row.values.append(wall)
                    ratio[chunk].values.append(wall / baseline)
                    shutil.rmtree(store)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    rows[1].met = ratio[1].median <= 1.5  # the default chunk size
    return [rows[1], rows["auto"], loop, ratio[1], ratio["auto"]]


def memory(server: LocalRedis, n: int, reps: int, log_dir: Path) -> list[Row]:
    per_result = Row("7 artifacts", f"Redis memory per result with {OUTPUT_BYTES // 1024} KiB outputs "
                     f"({n:,})", "KiB", target="< 70 KiB")
    field = Row("7 artifacts", "  of which the result's JSON in the results hash", "KiB")
    client = redis.Redis.from_url(server.url)
    with evofleet_worker(server, log_dir):
        for _ in range(reps):
            before = int(client.info("memory")["used_memory"])
            spec = spec_for(n, evaluator="tests.artifact_evaluators:sized_outputs",
                            params={"bytes": OUTPUT_BYTES}, chunk_size="auto")
            _, generation = run_generation(server.url, spec)
            results = generation.results()
            assert all(r.status.value == "ok" and not r.artifacts for r in results)  # all inline
            per_result.values.append((int(client.info("memory")["used_memory"]) - before) / n / 1024)
            field.values.append(client.hstrlen(GenerationKeys(spec.id).results, "c0") / 1024)
            client.delete(*GenerationKeys(spec.id).all())
    client.close()
    per_result.met = per_result.median < 70
    return [per_result, field]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 candidates, 1 repetition.")
    parser.add_argument("--reps", type=int, help="Repetitions (default 3, quick 1).")
    args = parser.parse_args()
    n = 200 if args.quick else 1000
    reps = args.reps or (1 if args.quick else 3)
    server = LocalRedis().start()
    try:
        rows = throughput(server, n, reps, server.workdir)
        rows += memory(server, n, reps, server.workdir)
    finally:
        server.stop()
    print_table(rows, f"evofleet artifact benchmarks ({reps} repetitions, 1 worker x {CONCURRENCY} "
                      f"pool children, {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
