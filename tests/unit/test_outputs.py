"""Outputs, feedback and artifacts without a worker: return values, the inline limit, the store
on a real folder, safetensors encoding, sinks' columns and where local mode puts artifacts."""

from __future__ import annotations

import csv
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from orchestration.api import with_artifact_store
from orchestration.settings import LaunchSettings
from orchestration.sinks import open_sink
from tests.conftest import make_spec
from workers.artifacts import (
    ArtifactCorrupt,
    ArtifactStore,
    ArtifactStoreError,
    decode_safetensors,
    encode,
    load_artifact,
    segment,
)
from workers.contract import EvaluationResult, Status, json_size
from workers.evaluators import Evaluation, EvaluationContext, EvaluationError
from workers.outputs import (
    FEEDBACK_NOTE,
    MAX_ARTIFACTS,
    Keeper,
    from_exception,
    load_feedback,
    load_outputs,
    unpack,
)


@pytest.mark.parametrize(("value", "scores", "outputs"), [
    ({"f1": 1.0, "f2": 2.0}, {"f1": 1.0, "f2": 2.0}, None),
    (0.5, 0.5, None),
    ({"scores": {"f": 1.0}, "outputs": [1, 2], "feedback": "ok"}, {"f": 1.0}, [1, 2]),
    ({"scores": 0.5}, 0.5, None),  # an objective named "scores" alone reads the same either way
    ({"scores": 0.5, "other": 1.0}, {"scores": 0.5, "other": 1.0}, None),  # plain scores
    ({"scores": "high", "outputs": 1}, {"scores": "high", "outputs": 1}, None),  # not scores-like
    (Evaluation(scores={"f": 2.0}, outputs={"a": 1}), {"f": 2.0}, {"a": 1}),
])
def test_unpack_tells_an_evaluation_from_plain_scores(value: Any, scores: Any, outputs: Any) -> None:
    evaluation = unpack(value)
    assert evaluation.scores == scores and evaluation.outputs == outputs


def test_failures_keep_what_the_exception_and_the_context_carry() -> None:
    context = EvaluationContext(device="cpu", generation_id="g", objectives={}, worker="w")
    context.attach(outputs={"step": 1}, feedback="so far", artifacts={"a": b"1"})
    context.attach(artifacts={"b": b"2"})
    kept = from_exception(EvaluationError("bad", outputs={"step": 2}), context.attached)
    assert kept is not None
    assert (kept.outputs, kept.feedback, set(kept.artifacts)) == ({"step": 2}, "so far", {"a", "b"})
    plain = ValueError("x")
    assert from_exception(plain, None) is None
    plain.evofleet_feedback = "why"  # type: ignore[attr-defined]
    assert from_exception(plain, None) == Evaluation(feedback="why")


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore((tmp_path / "store").as_uri())


def test_keeper_inline_overflow_and_problems(store: ArtifactStore, tmp_path: Path) -> None:
    keeper = Keeper("g", lambda: store, inline_limit=1024)
    fits = keeper.keep("c", Evaluation(outputs={"text": "a" * 500}, feedback="b" * 400))
    assert fits.outputs == {"text": "a" * 500} and fits.feedback == "b" * 400 and not fits.artifacts

    big = keeper.keep("c", Evaluation(outputs=["é" * 2000], feedback="fine"))
    assert big.problem is None and big.outputs == {"$artifact": "outputs.json"} and big.feedback == "fine"
    result = EvaluationResult(generation_id="g", candidate_id="c", status=Status.ok, **big.fields())
    assert json.loads(load_artifact(result, "outputs.json")) == ["é" * 2000]

    both = keeper.keep("d", Evaluation(outputs={"x": "y" * 3000}, feedback="z" * 5000))
    assert set(both.artifacts) == {"outputs.json", "feedback.txt"}
    assert both.feedback is not None and both.feedback.endswith(FEEDBACK_NOTE)
    assert json_size(both.outputs) + len(both.feedback.encode()) <= 1024
    whole = EvaluationResult(generation_id="g", candidate_id="d", status=Status.ok, **both.fields())
    assert load_outputs(whole) == {"x": "y" * 3000} and load_feedback(whole) == "z" * 5000
    assert load_outputs(result.model_copy(update={"outputs": [1]})) == [1]  # inline: as it is

    bad = keeper.keep("e", Evaluation(outputs={"x": float("nan")}, artifacts={"t": object(), "ok": b"1"}))
    assert isinstance(bad.problem, TypeError) and "outputs.x is nan" in str(bad.problem)
    assert bad.outputs is None and set(bad.artifacts) == {"ok"}

    too_many = keeper.keep("f", Evaluation(artifacts={str(i): b"" for i in range(MAX_ARTIFACTS + 1)}))
    assert isinstance(too_many.problem, ValueError) and not too_many.artifacts

    nowhere = Keeper("g", None, inline_limit=1024).keep("c", Evaluation(outputs="q" * 5000))
    assert isinstance(nowhere.problem, ArtifactStoreError) and "no artifact store" in str(nowhere.problem)
    assert nowhere.outputs is None  # never a marker pointing at nothing

    blocked = tmp_path / "blocked"
    blocked.write_text("a file, not a folder")
    failing = Keeper("g", lambda: ArtifactStore(blocked.as_uri()), 1024).keep(
        "c", Evaluation(outputs={"short": 1}, artifacts={"w": b"123"}))
    assert isinstance(failing.problem, ArtifactStoreError)
    assert f"artifact store {blocked.as_uri()}" in str(failing.problem)
    assert failing.outputs == {"short": 1}


def test_encoding_round_trips_without_pickle(tmp_path: Path) -> None:
    tensor = torch.randn(4, 5)
    tensors = {"w": torch.ones(2, dtype=torch.bfloat16), "b": torch.arange(3)}
    array = np.arange(6, dtype=np.int16).reshape(2, 3)
    for value, media in ((tensor, "application/safetensors"), (tensors, "application/safetensors"),
                         (array, "application/safetensors"), ({"a": array}, "application/safetensors")):
        data, media_type = encode(value)
        assert media_type == media and isinstance(data, bytes) and b"pickle" not in data[:200]
        back = decode_safetensors(data)
        if isinstance(value, torch.Tensor):
            assert torch.equal(back, value)
        elif isinstance(value, np.ndarray):
            assert np.array_equal(back, value)
        else:
            assert set(back) == set(value)
    assert encode(b"\x00\x01") == (b"\x00\x01", "application/octet-stream")
    assert encode("hé") == ("hé".encode(), "text/plain; charset=utf-8")
    log = tmp_path / "run.log"
    log.write_text("x")
    assert encode(log) == (log, "application/octet-stream")
    with pytest.raises(TypeError, match="cannot store a list"):
        encode([1, 2])
    with pytest.raises(ValueError, match="is not a file"):
        encode(tmp_path)


def test_store_keys_and_checks(store: ArtifactStore, tmp_path: Path) -> None:
    assert segment("a/b") == "a%2Fb" and segment("..") == "%2E." and segment(".x") == "%2Ex"
    ref = store.put("gen", "../other", "w", b"abc")
    assert ref.uri.endswith("/gen/%2E.%2Fother/w") and ref.size == 3
    result = EvaluationResult(generation_id="gen", candidate_id="c", status=Status.ok,
                              artifacts={"w": ref})
    assert load_artifact(result, "w") == b"abc" and store.generations() == ["gen"]
    with pytest.raises(KeyError, match="has no artifact 'x'"):
        load_artifact(result, "x")
    Path(ref.uri.removeprefix("file://")).write_bytes(b"abd")
    with pytest.raises(ArtifactCorrupt):
        load_artifact(result, "w")
    assert store.delete_generation("gen") and store.generations() == []
    assert not store.delete_generation("gen")


def test_csv_and_parquet_carry_outputs_feedback_and_references(store: ArtifactStore, tmp_path: Path) -> None:
    ref = store.put("g", "c0", "w", b"123")
    rows = [EvaluationResult(generation_id="g", candidate_id="c0", status=Status.ok, scores={"f": 1.0},
                             outputs={"per_example": [1, "é"]}, feedback="line1\nline2",
                             artifacts={"w": ref}),
            EvaluationResult(generation_id="g", candidate_id="c1", status=Status.ok, scores={"f": 2.0})]
    for name in ("r.csv", "r.parquet"):
        sink = open_sink(tmp_path / name, ["f"])
        sink.write(rows)
        sink.close()
    table = pq.read_table(tmp_path / "r.parquet").to_pylist()
    with (tmp_path / "r.csv").open(newline="") as handle:
        read_csv = list(csv.DictReader(handle))
    for row in (table[0], read_csv[0]):
        assert json.loads(row["outputs"]) == {"per_example": [1, "é"]}
        assert row["feedback"] == "line1\nline2"
        assert json.loads(row["artifacts"]) == {"w": ref.model_dump()}
    assert table[1]["outputs"] is None and table[1]["artifacts"] is None


def test_where_a_generation_puts_its_artifacts(tmp_path: Path) -> None:
    spec = make_spec([{"id": "a"}])
    settings = LaunchSettings()
    beside = with_artifact_store(spec, settings, tmp_path / "run1.parquet", local=True)
    assert beside.artifact_store == (tmp_path / "run1.artifacts").as_uri()
    temporary = with_artifact_store(spec, settings, None, local=True)
    folder = Path(tempfile.gettempdir()) / f"evofleet-artifacts-{spec.id}"
    assert temporary.artifact_store == folder.as_uri()
    assert with_artifact_store(spec, settings, None, local=False).artifact_store is None
    configured = LaunchSettings(artifact_store="s3://bucket/prefix/")
    assert with_artifact_store(spec, configured, None, local=True).artifact_store == "s3://bucket/prefix"
    own = make_spec([{"id": "a"}], artifact_store="relative/dir")
    assert own.artifact_store == (Path.cwd() / "relative/dir").as_uri()
    assert with_artifact_store(own, configured, None, local=False).artifact_store == own.artifact_store
    with pytest.raises(ValueError, match="knows no protocol 'nosuch'"):
        make_spec([{"id": "a"}], artifact_store="nosuch://x")


def test_store_settings_are_urls(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from workers.settings import WorkerSettings

    assert WorkerSettings(artifact_store=str(tmp_path)).artifact_store == tmp_path.as_uri()
    assert WorkerSettings(inline_output_bytes=1024).inline_output_bytes == 1024
    with pytest.raises(ValidationError, match="knows no protocol"):
        LaunchSettings(artifact_store="nosuch://bucket")
