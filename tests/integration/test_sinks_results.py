"""Results files from a live generation, and afterwards from the ledger (`evofleet results`)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow.parquet as pq
import redis
from typer.testing import CliRunner

from orchestration.cli import app as cli
from orchestration.local_cluster import LocalWorker
from tests.conftest import make_spec, run_spec
from workers.ledger import Ledger


def candidates() -> list[dict[str, object]]:
    # c0..c4 lie on ZDT1's true front (the rest of x is 0); c5..c9 do not; "bad" raises.
    out: list[dict[str, object]] = [
        {"id": f"c{i}", "priority": "high", "params": {"x": [i / 4, 0.0, 0.0]}} for i in range(5)
    ]
    out += [{"id": f"c{i}", "params": {"x": [(i - 5) / 4, 0.5, 0.5]}} for i in range(5, 10)]
    out.append({"id": "bad", "priority": "low", "params": {"x": [0.5]}})
    return out


def test_live_parquet_then_results_command_in_every_format(
    redis_url: str, session_worker: LocalWorker, redis_client: redis.Redis, tmp_path: Path
) -> None:
    spec = make_spec(candidates(), batch_size=3, batch_timeout=0.1, chunk_size=2)
    live = tmp_path / "live.parquet"
    generation = run_spec(spec, redis_url, out=live)
    assert generation.wait(0) == "complete"

    meta = pq.ParquetFile(live).metadata
    assert meta.num_rows == 11 and meta.num_row_groups > 1
    table = pq.read_table(live)
    assert {"f1", "f2", "status", "worker", "device", "eval_seconds"} <= set(table.column_names)
    assert sorted(table.column("candidate_id").to_pylist()) == sorted(
        str(c["id"]) for c in candidates()
    )

    runner = CliRunner()
    written: dict[str, Path] = {}
    for name in ("after.parquet", "after.csv", "after.jsonl", "after.data"):
        out = tmp_path / name
        extra = ["--format", "csv"] if name.endswith(".data") else []
        reply = runner.invoke(
            cli, ["results", spec.id, "--out", str(out), "--broker", redis_url, *extra]
        )
        assert reply.exit_code == 0, reply.output
        written[name] = out
    from_ledger = pq.read_table(written["after.parquet"])
    assert sorted(from_ledger.column("candidate_id").to_pylist()) == sorted(
        table.column("candidate_id").to_pylist()
    )
    rows = {r["candidate_id"]: r for r in from_ledger.to_pylist()}
    assert rows["bad"]["status"] == "error" and rows["bad"]["f1"] is None
    assert rows["c2"]["f1"] == 0.5
    with written["after.csv"].open() as handle:
        assert len(list(csv.DictReader(handle))) == 11
    with written["after.data"].open() as handle:
        assert {r["candidate_id"] for r in csv.DictReader(handle)} == set(rows)
    lines = [json.loads(x) for x in written["after.jsonl"].read_text().splitlines()]
    assert {x["candidate_id"] for x in lines} == set(rows)
    summary_file = tmp_path / "after.jsonl.summary.json"
    assert json.loads(summary_file.read_text())["counts"]["ok"] == 10
    # One summary per results file: the Parquet one did not overwrite the JSONL one's.
    assert json.loads((tmp_path / "after.parquet.summary.json").read_text())["recorded"] == 11
    # The candidates' params are echoed: a JSON object in JSONL, a JSON string column in Parquet.
    params = {str(c["id"]): c.get("params", {}) for c in candidates()}
    assert all(x["params"] == params[x["candidate_id"]] for x in lines)
    assert all(json.loads(r["params"]) == params[cid] for cid, r in rows.items())

    reply = runner.invoke(cli, ["results", spec.id, "--out", str(tmp_path / "x.txt"),
                                "--broker", redis_url])
    assert reply.exit_code == 2


def test_summary_of_a_real_generation(
    redis_url: str, session_worker: LocalWorker, redis_client: redis.Redis
) -> None:
    spec = make_spec(candidates(), chunk_size=1)
    generation = run_spec(spec, redis_url)
    assert generation.wait(0) == "complete"
    summary = Ledger(redis_client, spec.id).summary()
    assert summary is not None and summary == generation.summary()

    assert summary["counts"]["ok"] == 10 and summary["counts"]["error"] == 1
    assert summary["failed"] == {"error": ["bad"]}
    front = {m["candidate_id"] for m in summary["pareto_front"]}
    assert front == {f"c{i}" for i in range(5)}
    assert [e["candidate_id"] for e in summary["top_k"]["f1"]][:2] in (["c0", "c5"], ["c5", "c0"])
    assert summary["best"]["f2"]["scores"]["f2"] == 0.0  # c4: x1 = 1 on the front
    (worker,) = summary["per_worker"]
    assert worker["worker"] == "session@127.0.0.1" and worker["device"] == "cpu"
    assert worker["candidates"] == 11
    assert worker["eval_seconds"]["p95"] >= worker["eval_seconds"]["p50"] >= 0
    assert worker["slots"] in (1, 2)  # two pool children share the device "cpu"
    assert 0 < worker["utilization"] <= 1.0
    assert set(summary["queue_wait_seconds"]) == {"high", "normal", "low"}
    assert summary["throughput_per_s"] > 0
