"""Sinks' pure parts and files: format choice, flat rows, JSONL, CSV, Parquet row groups."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from orchestration.sinks import (
    check_output,
    flat_row,
    format_for,
    open_sink,
    score_column,
    summary_path,
)
from workers.contract import ErrorInfo, EvaluationResult, Status

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def results(n: int) -> list[EvaluationResult]:
    out = []
    for i in range(n):
        failed = i % 5 == 4
        out.append(
            EvaluationResult(
                generation_id="g", candidate_id=f"c{i}",
                status=Status.crashed if failed else Status.ok,
                scores={} if failed else {"f1": i / 10, "status": 1.0},
                error=ErrorInfo(type="WorkerLostError", exitcode=-9, signal="SIGKILL")
                if failed else None,
                attempts=2 if failed else 1, worker="w@h", device="cpu",
                submitted_at=T0, started_at=T0 + timedelta(seconds=1),
                finished_at=T0 + timedelta(seconds=1.5),
            )
        )
    return out


@pytest.mark.parametrize(
    ("path", "explicit", "expected"),
    [("r.jsonl", None, "jsonl"), ("r.json", None, "jsonl"), ("R.PARQUET", None, "parquet"),
     ("r.csv", None, "csv"), ("r.txt", "csv", "csv"), ("r", "Parquet", "parquet")],
)
def test_format_for(path: str, explicit: str | None, expected: str) -> None:
    assert format_for(path, explicit) == expected


def test_format_for_refuses_unknown() -> None:
    with pytest.raises(ValueError, match="--format"):
        format_for("results.txt")
    with pytest.raises(ValueError):
        format_for("results.csv", "xlsx")


def test_flat_row_has_fixed_columns_then_objectives() -> None:
    ok, crashed = results(5)[0], results(5)[4]
    row = flat_row(ok, ["f1", "status"])
    # An objective named like a fixed column gets a prefixed column of its own.
    assert score_column("status") == "score.status" and score_column("f1") == "f1"
    assert row["status"] == "ok" and row["score.status"] == 1.0 and row["f1"] == 0.0
    assert row["eval_seconds"] == 0.5 and row["error_type"] is None
    bad = flat_row(crashed, ["f1"])
    assert (bad["error_type"], bad["exitcode"], bad["signal"]) == ("WorkerLostError", -9, "SIGKILL")
    assert bad["f1"] is None and bad["attempts"] == 2


def test_parquet_has_a_row_group_per_batch_and_objective_columns(tmp_path: Path) -> None:
    path = tmp_path / "r.parquet"
    sink = open_sink(path, ["f1"])
    data = results(10)
    for start in range(0, 10, 3):
        sink.write(data[start : start + 3])
    sink.write([])  # an empty batch writes no row group
    sink.close()
    meta = pq.ParquetFile(path).metadata
    assert meta.num_row_groups == 4 and meta.num_rows == 10
    table = pq.read_table(path)
    assert table.schema.field("f1").type == "double"
    assert table.column("candidate_id").to_pylist() == [f"c{i}" for i in range(10)]
    assert table.column("f1").to_pylist()[:2] == [0.0, 0.1]
    assert table.column("f1").to_pylist()[4] is None
    assert table.column("status").to_pylist()[4] == "crashed"


def test_csv_and_jsonl_are_flushed_per_batch(tmp_path: Path) -> None:
    data = results(6)
    csv_sink = open_sink(tmp_path / "sub" / "r.csv", ["f1"])
    jsonl_sink = open_sink(tmp_path / "r.jsonl", ["f1"])
    csv_sink.write(data[:3])
    jsonl_sink.write(data[:3])
    # Readable before close: each batch is flushed.
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 3
    assert len((tmp_path / "sub" / "r.csv").read_text().splitlines()) == 4
    csv_sink.write(data[3:])
    jsonl_sink.write(data[3:])
    csv_sink.close()
    jsonl_sink.close()
    with (tmp_path / "sub" / "r.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["candidate_id"] for r in rows] == [f"c{i}" for i in range(6)]
    assert rows[1]["f1"] == "0.1" and rows[4]["status"] == "crashed"
    assert rows[0]["started_at"] == (T0 + timedelta(seconds=1)).isoformat()
    lines = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [x["candidate_id"] for x in lines] == [f"c{i}" for i in range(6)]
    assert lines[4]["error"]["signal"] == "SIGKILL"


def test_summary_path_sits_beside_results_and_names_its_format() -> None:
    assert summary_path("out/results.parquet") == Path("out/results.parquet.summary.json")
    # Two formats of one run never share (overwrite) one summary.
    assert summary_path("res.jsonl") != summary_path("res.parquet")


def test_csv_and_parquet_carry_params_and_metadata_as_json_strings(tmp_path: Path) -> None:
    data = results(2)
    data[0].params = {"x": [1, 2], "name": "a"}
    data[0].metadata = {"parent": "p0"}
    for name in ("r.csv", "r.parquet", "r.jsonl"):
        sink = open_sink(tmp_path / name, ["f1"])
        sink.write(data)
        sink.close()
    with (tmp_path / "r.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert json.loads(rows[0]["params"]) == {"x": [1, 2], "name": "a"}
    assert json.loads(rows[0]["metadata"]) == {"parent": "p0"}
    assert rows[1]["params"] == ""  # not echoed: empty cell
    table = pq.read_table(tmp_path / "r.parquet")
    assert table.schema.field("params").type == "string"
    assert [json.loads(v) if v else v for v in table.column("metadata").to_pylist()] == [
        {"parent": "p0"}, None,
    ]
    first = json.loads((tmp_path / "r.jsonl").read_text().splitlines()[0])
    assert first["params"] == {"x": [1, 2], "name": "a"} and first["metadata"] == {"parent": "p0"}


def test_params_columns_round_trip_floats_big_integers_and_text_exactly() -> None:
    """The params column is pydantic's JSON (not json.dumps): same values back, float64 exact."""
    params = {"x": [1e-05, 0.1 + 0.2, -0.0, 1e300, 5e-324], "n": 10**30, "name": "héllo ✓",
              "nested": [{"a": None, "b": True}]}
    result = results(1)[0].model_copy(update={"params": params})
    row = flat_row(result, ["f1"])
    assert json.loads(row["params"]) == params
    assert json.loads(row["params"])["x"][1] == 0.30000000000000004


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("afile/r.jsonl", "Not a directory"),  # a parent that is a regular file
        ("x" * 300 + ".jsonl", "File name too long"),
        ("x" * 245 + ".jsonl", "File name too long"),  # its summary's name is the one too long
    ],
)
def test_check_output_creates_the_files_for_real(tmp_path: Path, name: str, reason: str) -> None:
    (tmp_path / "afile").write_text("")
    with pytest.raises(ValueError, match=reason):
        check_output(tmp_path / name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_check_output_refuses_proc_although_root_may_write_there() -> None:
    with pytest.raises(ValueError, match=r"cannot write results to '/proc/r\.jsonl'"):
        check_output("/proc/r.jsonl")


def test_check_output_leaves_files_as_they_were(tmp_path: Path) -> None:
    existing = tmp_path / "old.jsonl"
    existing.write_text("kept\n")
    assert check_output(existing) == "jsonl" and existing.read_text() == "kept\n"
    assert check_output(tmp_path / "new.csv") == "csv"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.jsonl"]
