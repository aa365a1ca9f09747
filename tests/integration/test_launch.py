"""A generation end to end against a real redis-server and a real celery worker."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis
from pydantic import ValidationError

from orchestration.api import launch, launcher_app
from orchestration.generation import CollectorBusy, Generation
from orchestration.local_cluster import LocalRedis, LocalWorker
from orchestration.settings import LaunchSettings
from orchestration.spec_loading import spec_from_dict
from tests.conftest import make_spec, run_spec
from workers.ledger import Ledger


def test_generation_completes_with_one_result_per_candidate(
    redis_url: str, session_worker: LocalWorker, redis_client: redis.Redis, tmp_path: Path
) -> None:
    candidates = [
        {"id": f"c{i}", "priority": p, "params": {"x": [i / 20, 0.5, 0.5]}}
        for i, p in enumerate(["low", "normal", "high", "critical"] * 5)
    ]
    spec = make_spec(candidates)
    out = tmp_path / "results.jsonl"
    batches: list[int] = []
    generation = run_spec(spec, redis_url, out=out, on_batch=lambda b: batches.append(len(b)))

    assert generation.wait(0) == "complete"
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["candidate_id"] for r in rows) == sorted(c["id"] for c in candidates)
    assert {r["status"] for r in rows} == {"ok"}
    for row in rows:
        for key in ("generation_id", "scores", "error", "attempts", "worker", "device",
                    "submitted_at", "started_at", "finished_at"):
            assert key in row
        assert row["worker"] == "session@127.0.0.1"
        assert row["device"] == "cpu"
    assert sum(batches) == 20 and max(batches) <= spec.batch_size
    # The chord body ran on the worker side: state and summary are in Redis.
    ledger = Ledger(redis_client, spec.id)
    assert ledger.status() == "complete"
    summary = ledger.summary()
    assert summary is not None and summary["counts"]["ok"] == 20


def test_local_worker_imports_evaluators_from_the_launch_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `evofleet launch` in a project directory with ./<module>.py: local workers import it too.
    module = f"evofleet_local_{uuid.uuid4().hex}"
    (tmp_path / f"{module}.py").write_text(
        "import os\n\ndef evaluate(candidate, context):\n    return {'y': float(len(os.getcwd()))}\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # the launcher's side, as the console script does
    spec = make_spec([{"id": "a"}, {"id": "b"}], evaluator=f"{module}:evaluate",
                     objectives={"y": "max"})
    settings = LaunchSettings(broker_url=None, local_workers=1, local_concurrency=1)
    out = tmp_path / "results.jsonl"
    generation = launch(spec, settings=settings, out=out)

    assert generation.wait(60) == "complete"  # the local cluster is gone: read the output file
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["status"] for row in rows] == ["ok", "ok"], rows
    assert {row["scores"]["y"] for row in rows} == {float(len(str(tmp_path)))}  # ran in tmp_path
    # Its Redis is gone with it, yet the results stay readable from the handle.
    assert sorted(r.candidate_id for r in generation.results()) == ["a", "b"]


def failing_population() -> Iterator[dict[str, object]]:
    yield {"id": "a"}
    raise OSError("population file vanished")


@pytest.mark.parametrize(
    ("population", "error", "message"),
    [
        ([{"id": "a"}, {"id": "b"}, {"id": "a"}], ValueError, "duplicate candidate id 'a'"),
        (failing_population, OSError, "population file vanished"),
        ([], ValueError, "has no candidates"),
        ([{"id": "a", "params": {"lr": float("nan")}}], ValidationError, "params.lr is nan"),
    ],
)
def test_a_bad_population_leaves_nothing_behind(
    redis_url: str, redis_client: redis.Redis, population: Any, error: type[Exception], message: str
) -> None:
    """Streamed from any iterable, a population that turns out bad raises and leaves no key, so
    the same id can be launched again (a duplicate id used to hang the launcher for good)."""
    spec = spec_from_dict({"id": f"bad-pop-{uuid.uuid4().hex[:8]}", "evaluator": "zdt1",
                           "objectives": {"f1": "min", "f2": "min"}}, allow_empty=True)
    candidates = population() if callable(population) else population
    with pytest.raises(error, match=re.escape(message)):
        launch(spec, broker_url=redis_url, candidates=candidates)
    assert list(redis_client.scan_iter(match=f"*{spec.id}*")) == []


def test_an_on_batch_that_raises_loses_no_result(
    redis_url: str, session_worker: LocalWorker, tmp_path: Path
) -> None:
    """The callback is not called again, collection goes on, and wait() raises its error."""
    calls: list[int] = []

    def on_batch(batch: list[object]) -> None:
        calls.append(len(batch))
        raise RuntimeError("optimizer bug")

    spec = make_spec([{"id": f"c{i}", "params": {"x": [0.1, 0.0]}} for i in range(12)],
                     batch_size=2)
    out = tmp_path / "r.jsonl"
    generation = launch(spec, broker_url=redis_url, out=out, on_batch=on_batch)
    with pytest.raises(RuntimeError, match="optimizer bug"):
        generation.wait(60)
    assert len(calls) == 1
    assert len(out.read_text().splitlines()) == 12
    summary = generation.summary()
    assert summary is not None and summary["counts"]["ok"] == 12


@pytest.mark.slow
def test_a_program_that_ends_mid_generation_leaves_no_local_process(tmp_path: Path) -> None:
    """Local mode from Python: the program raises before its generation ended; at exit the
    generation is cancelled and its private Redis and workers are stopped."""
    script = tmp_path / "optimizer.py"
    script.write_text(
        "import psutil\n"
        "from orchestration import launch\n"
        "from orchestration.settings import LaunchSettings\n"
        "from orchestration.spec_loading import spec_from_dict\n"
        "spec = spec_from_dict({'evaluator': 'sleep', 'objectives': {'seconds': 'min'},\n"
        "    'candidates': [{'id': f'c{i}', 'params': {'seconds': 2}} for i in range(8)]})\n"
        "generation = launch(spec, settings=LaunchSettings(local_workers=1, local_concurrency=2))\n"
        "print(' '.join(str(p.pid) for p in psutil.Process().children(recursive=True)), flush=True)\n"
        "raise RuntimeError('the optimizer crashed')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVOFLEET_")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, env=env, cwd=tmp_path)
    assert done.returncode == 1 and "the optimizer crashed" in done.stderr
    pids = [int(pid) for pid in done.stdout.split()]
    assert len(pids) >= 3  # redis-server, the worker, its pool children
    _, alive = psutil.wait_procs([p for p in map(_process, pids) if p is not None], timeout=10)
    assert alive == [], [p.cmdline() for p in alive]


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


def test_a_launch_holds_the_collector_lease_from_the_moment_it_exists(
    private_redis: LocalRedis,
) -> None:
    # No worker: the generation stays running until it is cancelled.
    spec = make_spec([{"id": "c0", "params": {"x": [0.1, 0.0]}}])
    generation = launch(spec, broker_url=private_redis.url)
    client = redis.Redis.from_url(private_redis.url)
    try:
        holder = Ledger(client, spec.id).collector()
        assert holder is not None and holder.startswith(f"{os.getpid()}@")
        rival = Generation(launcher_app(private_redis.url), client, spec.id)
        with pytest.raises(CollectorBusy):
            rival.claim(timeout_s=0.3)
        rival.app.close()
        generation.cancel()
        assert generation.wait(30) == "cancelled"
        assert Ledger(client, spec.id).collector() is None  # released at the end
    finally:
        client.close()
