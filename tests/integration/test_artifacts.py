"""Artifacts written by a pool child to a real store (a folder, an S3 server on loopback), read
back by the launcher; outputs past the inline limit; failing stores; retention and cleanup."""

from __future__ import annotations

import gc
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import torch

from orchestration.cli import iter_stream
from orchestration.generation import Generation
from orchestration.local_cluster import LocalRedis, LocalWorker, free_port
from orchestration.settings import LaunchSettings
from tests.conftest import READY_TIMEOUT_S, make_spec
from tests.conftest import run_spec as _run_spec
from workers.artifacts import load_artifact
from workers.contract import EvaluationResult
from workers.keys import ARTIFACT_STORES, GenerationKeys
from workers.ledger import Ledger
from workers.outputs import FEEDBACK_NOTE

pytestmark = pytest.mark.slow
INLINE_LIMIT = 8192
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
       "AWS_DEFAULT_REGION": "us-east-1"}
BUCKET = "evofleet-test"
_opened: list[Generation] = []


def run_spec(spec: Any, url: str, **kwargs: Any) -> Generation:
    """Run to the end; the module closes the Redis clients reading it before Redis stops."""
    generation = _run_spec(spec, url, **kwargs)
    _opened.append(generation)
    return generation


class S3Server:
    """moto's S3-compatible server on a loopback port, in this process."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.port = free_port()
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.running = False

    @property
    def options(self) -> dict[str, Any]:
        return {"endpoint_url": f"http://127.0.0.1:{self.port}"}

    def start(self) -> S3Server:
        self.server.start()
        self.running = True
        return self

    def stop(self) -> None:
        if self.running:
            self.server.stop()
            self.running = False


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    saved = {name: os.environ.get(name) for name in AWS}
    os.environ.update(AWS)  # read back by this process too
    server = S3Server().start()
    import s3fs

    s3fs.S3FileSystem(**server.options).mkdir(BUCKET)
    yield server
    server.stop()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="module")
def artifact_cluster(
    s3: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, LocalWorker]]:
    """A Redis and a worker of this module's own: a small inline limit, a sweep every second."""
    server = LocalRedis().start()
    env = {
        **AWS,
        "EVOFLEET_INLINE_OUTPUT_BYTES": str(INLINE_LIMIT),
        "EVOFLEET_ARTIFACT_SWEEP_S": "1",
        "EVOFLEET_ARTIFACT_STORE_OPTIONS": json.dumps(s3.options),
    }
    log = tmp_path_factory.mktemp("artifact-worker") / "worker.log"
    worker = LocalWorker(server.url, concurrency=2, env=env, log_path=log,
                         hostname=f"artifacts-{server.port}@127.0.0.1")
    worker.start()
    client = redis.Redis.from_url(server.url)
    try:
        worker.wait_ready(client, timeout_s=READY_TIMEOUT_S)
        yield server.url, worker
    finally:
        client.close()
        for generation in _opened:  # results() after the end reconnected them
            generation.client.close()
        _opened.clear()
        gc.collect()
        worker.stop(timeout_s=5)  # nothing left to finish
        server.stop()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _local(uri: str) -> Path:
    assert uri.startswith("file://")
    return Path(uri.removeprefix("file://"))


def _expected_log() -> bytes:
    return "".join(f"step {i} loss {1 / (i + 1):.6f}\n" for i in range(2000)).encode()


def _stream_entry(client: redis.Redis, generation_id: str, candidate_id: str) -> dict[bytes, bytes]:
    for _entry_id, fields in client.xrange(GenerationKeys(generation_id).stream):
        raw = fields.get(b"r")
        if fields.get(b"c") == candidate_id.encode() or (
            raw is not None and json.loads(raw)["candidate_id"] == candidate_id
        ):
            return dict(fields)
    raise AssertionError(f"{candidate_id} not in the stream")


def test_tensor_and_file_artifacts_round_trip(
    artifact_cluster: tuple[str, LocalWorker], tmp_path: Path
) -> None:
    url, _worker = artifact_cluster
    store = tmp_path / "store"
    spec = make_spec([{"id": "big", "params": {"mb": 50, "seed": 3}},
                      {"id": "small/one", "params": {"mb": 0.01, "seed": 1}}],
                     evaluator="tests.artifact_evaluators:tensor_and_file", objectives={"f": "max"},
                     artifact_store=f"file://{store}", soft_time_limit=60, time_limit=90)
    out = tmp_path / "results.jsonl"
    generation = run_spec(spec, url, out=out)
    results = {r.candidate_id: r for r in generation.results()}
    assert {r.status.value for r in results.values()} == {"ok"}, results

    big = results["big"]
    assert set(big.artifacts) == {"weights", "state", "array", "raw", "log"}
    for ref in big.artifacts.values():  # what the store holds is what the result says
        path = _local(ref.uri)
        assert path.is_relative_to(store / spec.id / "big")
        assert path.stat().st_size == ref.size and _sha256(path) == ref.sha256
    assert big.artifacts["weights"].size > 50 * 1024 * 1024
    assert big.artifacts["weights"].media_type == "application/safetensors"
    weights = generation.artifact("big", "weights")
    assert isinstance(weights, torch.Tensor) and weights.dtype == torch.float32
    assert torch.equal(weights, torch.arange(50 * 1024 * 1024 // 4, dtype=torch.float32) + 3)
    state = generation.artifact("big", "state")
    assert set(state) == {"w", "b"} and torch.equal(state["w"], torch.ones(3, 4, dtype=torch.float16))
    assert np.array_equal(generation.artifact("big", "array"), np.linspace(0, 1, 11))
    assert generation.artifact("big", "raw") == bytes(range(256))
    assert generation.artifact("big", "log") == _expected_log()
    log_path = generation.artifact("big", "log", as_path=True)
    assert log_path.read_bytes() == _expected_log()
    assert big.outputs == {"log_sha256": hashlib.sha256(_expected_log()).hexdigest()}
    # A candidate id with a slash stays one folder of its own.
    small = results["small/one"]
    assert _local(small.artifacts["raw"].uri).parent.name == "small%2Fone"

    # Redis holds references only: the result's JSON, once in the hash and in the stream.
    client = redis.Redis.from_url(url)
    stored = client.hstrlen(GenerationKeys(spec.id).results, "big")
    entry = _stream_entry(client, spec.id, "big")
    client.close()
    assert stored + sum(len(v) for v in entry.values()) < INLINE_LIMIT

    # The results file carries the references; loading from it checks the sha256 again.
    row = next(json.loads(line) for line in out.read_text().splitlines() if '"big"' in line)
    from_file = EvaluationResult.model_validate(row)
    assert from_file.artifacts == big.artifacts
    assert torch.equal(load_artifact(from_file, "state")["b"], torch.tensor([3]))


def test_outputs_above_the_inline_limit_become_artifacts(
    artifact_cluster: tuple[str, LocalWorker], tmp_path: Path
) -> None:
    url, _worker = artifact_cluster
    spec = make_spec(
        [{"id": "fits", "params": {"bytes": 1000}},
         {"id": "long-outputs", "params": {"bytes": 100_000}},
         {"id": "long-feedback", "params": {"bytes": 10, "feedback_bytes": 50_000}},
         {"id": "many-scores", "params": {"bytes": 10, "extra_scores": 5000}}],
        evaluator="tests.artifact_evaluators:big_outputs", objectives={"f": "max"},
        artifact_store=str(tmp_path / "store"),
    )
    generation = run_spec(spec, url)
    every = sorted(generation.results(), key=lambda r: r.candidate_id)
    results = {r.candidate_id: r for r in every}
    many = results.pop("many-scores")
    assert many.status.value == "error" and many.error is not None
    assert "5001 scores exceed the inline limit" in many.error.message
    assert {r.status.value for r in results.values()} == {"ok"}
    assert results["fits"].outputs == {"text": "x" * 1000} and not results["fits"].artifacts

    long_outputs = results["long-outputs"]
    assert long_outputs.outputs == {"$artifact": "outputs.json"}
    assert long_outputs.feedback == "short"
    assert json.loads(generation.artifact("long-outputs", "outputs.json")) == {"text": "x" * 100_000}
    long_feedback = results["long-feedback"]
    assert long_feedback.outputs == {"text": "x" * 10}
    assert long_feedback.feedback is not None and long_feedback.feedback.endswith(FEEDBACK_NOTE)
    assert generation.artifact("long-feedback", "feedback.txt") == b"y" * 50_000

    client = redis.Redis.from_url(url)
    for candidate_id in [*results, "many-scores"]:  # bounded whatever the evaluator returned
        assert client.hstrlen(GenerationKeys(spec.id).results, candidate_id) < INLINE_LIMIT + 1024
    # A large result is streamed by id (Redis holds its JSON once); `evofleet results` and the
    # collector read it from the hash all the same.
    assert b"c" in _stream_entry(client, spec.id, "long-feedback")
    streamed = [r for batch in iter_stream(Ledger(client, spec.id)) for r in batch]
    assert sorted(streamed, key=lambda r: r.candidate_id) == every
    client.close()


def test_s3_store_round_trip_then_unreachable(
    artifact_cluster: tuple[str, LocalWorker], s3: S3Server
) -> None:
    url, _worker = artifact_cluster
    store = f"s3://{BUCKET}/runs"
    settings = LaunchSettings(artifact_store_options=s3.options)
    spec = make_spec([{"id": "c1", "params": {"mb": 1, "seed": 7}}],
                     evaluator="tests.artifact_evaluators:tensor_and_file", objectives={"f": "max"},
                     artifact_store=store)
    generation = run_spec(spec, url, settings=settings)
    (result,) = generation.results()
    assert result.status.value == "ok", result.error
    assert result.artifacts["weights"].uri == f"{store}/{spec.id}/c1/weights"
    weights = generation.artifact("c1", "weights")
    assert torch.equal(weights, torch.arange(262144, dtype=torch.float32) + 7)
    downloaded = generation.artifact("c1", "log", as_path=True)
    assert downloaded.read_bytes() == _expected_log()
    assert _sha256(downloaded) == result.artifacts["log"].sha256

    s3.stop()  # the same URL, nothing listening any more
    spec = make_spec([{"id": "c2", "params": {"mb": 1}}],
                     evaluator="tests.artifact_evaluators:tensor_and_file", objectives={"f": "max"},
                     artifact_store=store, soft_time_limit=20)
    (failed,) = run_spec(spec, url, settings=settings).results()
    assert failed.status.value == "error" and failed.error is not None
    assert failed.error.type == "ArtifactStoreError"
    assert f"artifact store {store}" in failed.error.message
    assert failed.scores == {"f": 0.0}  # it was scored; what it attached could not be kept
    assert failed.outputs is not None  # inline outputs are kept all the same


def test_unwritable_or_full_file_store_is_an_error_naming_it(
    artifact_cluster: tuple[str, LocalWorker], tmp_path: Path
) -> None:
    url, _worker = artifact_cluster
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("not a folder")
    full = tmp_path / "full"
    spec_full = make_spec([{"id": "c"}], evaluator="tests.artifact_evaluators:one_tensor",
                          objectives={"f": "max"}, artifact_store=str(full))
    (full / spec_full.id / "c").mkdir(parents=True)
    (full / spec_full.id / "c" / "weights").symlink_to("/dev/full")  # every write: ENOSPC
    spec_file = make_spec([{"id": "c"}], evaluator="tests.artifact_evaluators:one_tensor",
                          objectives={"f": "max"}, artifact_store=str(not_a_folder / "store"))
    for spec, where, reason in ((spec_file, not_a_folder / "store", "Error"),
                                (spec_full, full, "No space left on device")):
        (result,) = run_spec(spec, url).results()
        assert result.status.value == "error" and result.error is not None
        assert result.error.type == "ArtifactStoreError"
        assert f"artifact store file://{where}" in result.error.message
        assert reason in result.error.message


def _folder_gone(path: Path, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not path.exists():
            return True
        time.sleep(0.2)
    return False


def test_retention_and_cleanup_remove_artifacts(
    artifact_cluster: tuple[str, LocalWorker], tmp_path: Path
) -> None:
    url, _worker = artifact_cluster
    store = tmp_path / "store"
    specs = [make_spec([{"id": "c", "params": {"mb": 0.01}}],
                       evaluator="tests.artifact_evaluators:one_tensor", objectives={"f": "max"},
                       artifact_store=str(store)) for _ in range(3)]
    for spec in specs:
        (result,) = run_spec(spec, url).results()
        assert result.status.value == "ok" and (store / spec.id / "c" / "weights").is_file()
    expiring, crashed, kept = specs
    client = redis.Redis.from_url(url)

    # Retention: once the generation's keys expire, a worker's sweep deletes its artifacts.
    Ledger(client, expiring.id).expire(1)
    assert _folder_gone(store / expiring.id, timeout_s=30)
    members = [json.loads(m) for m in client.zrange(ARTIFACT_STORES, 0, -1)]
    assert [expiring.id, f"file://{store}"] not in members

    # A crash: Redis lost the generation and the record of its store. Workers cannot know;
    # `evofleet cleanup --store` finds the orphaned folder.
    client.delete(*GenerationKeys(crashed.id).all())
    client.zrem(ARTIFACT_STORES, json.dumps([crashed.id, f"file://{store}"]))
    time.sleep(2.5)  # two sweep intervals: the worker leaves it
    assert (store / crashed.id).exists()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    dry = subprocess.run(
        [sys.executable, "-m", "orchestration.console", "cleanup", "--broker", url,
         "--store", str(store), "--dry-run"],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert dry.returncode == 0, dry.stderr
    assert f"would delete artifacts of {crashed.id}" in dry.stderr and (store / crashed.id).exists()
    done = subprocess.run(
        [sys.executable, "-m", "orchestration.console", "cleanup", "--broker", url,
         "--store", str(store)],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert done.returncode == 0, done.stderr
    assert not (store / crashed.id).exists()
    assert (store / kept.id / "c" / "weights").is_file()  # still in Redis: untouched
    client.close()


def test_a_dead_pool_child_keeps_the_outputs_attached_before(
    artifact_cluster: tuple[str, LocalWorker],
) -> None:
    url, _worker = artifact_cluster
    spec = make_spec([{"id": "killed", "params": {"mode": "kill"}},
                      {"id": "hung", "params": {"mode": "hang"}}],
                     evaluator="tests.artifact_evaluators:attach_then_die", objectives={"f": "max"},
                     crash_retries=0, soft_time_limit=1, time_limit=3)
    generation = run_spec(spec, url, timeout_s=90)
    results = {r.candidate_id: r for r in generation.results()}
    assert results["killed"].status.value == "crashed"
    assert results["hung"].status.value == "timeout"  # the hard limit killed its child
    for candidate_id, result in results.items():
        assert result.outputs == {"trace": ["loaded", candidate_id]}
        assert result.feedback == "died after loading"
    client = redis.Redis.from_url(url)
    assert not client.exists(GenerationKeys(spec.id).attached)  # dropped once recorded
    client.close()


def test_a_long_lived_child_remembers_a_bounded_number_of_stores(redis_client: redis.Redis) -> None:
    """Every generation's store is registered for the sweep; the per-process memo stays bounded."""
    from workers import retention

    ids = [f"memo-{i}" for i in range(retention._REGISTERED_KEPT + 500)]
    for generation_id in ids:
        retention.register_store(redis_client, generation_id, "file:///tmp/memo-store")
    assert len(retention._registered) == retention._REGISTERED_KEPT
    stored = {json.loads(m)[0] for m in redis_client.zrange(ARTIFACT_STORES, 0, -1)}
    assert set(ids) <= stored
    redis_client.delete(ARTIFACT_STORES)
    for generation_id in (ids[0], ids[-1]):  # the oldest was forgotten, the newest is remembered
        retention.register_store(redis_client, generation_id, "file:///tmp/memo-store")
    assert [json.loads(m)[0] for m in redis_client.zrange(ARTIFACT_STORES, 0, -1)] == [ids[0]]
    redis_client.delete(ARTIFACT_STORES)
