"""The ``evofleet`` command: exit codes, bad input rejected before anything is submitted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from orchestration.local_cluster import LocalWorker

SPEC = """
id: {gen_id}
evaluator: zdt2
objectives: {{f1: min, f2: min}}
batch_size: 5
batch_timeout: 0.2
candidates:
  - {{id: a, priority: critical, params: {{x: [0.1, 0.0, 0.0]}}}}
  - {{id: b, priority: low, params: {{x: [0.5, 0.0, 0.0]}}}}
  - {{id: c, params: {{x: [0.9, 0.0, 0.0]}}}}
  - {{id: d, priority: high, params: {{x: [0.5, 0.5, 0.5]}}}}
"""


def evofleet(
    *args: str, broker: str | None, cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVOFLEET_")}
    if broker:
        env["EVOFLEET_BROKER_URL"] = broker
    root = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = str(root)
    env["COLUMNS"] = "160"
    return subprocess.run(
        [sys.executable, "-m", "orchestration.cli", *args],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd,
    )


def keys_of(client: redis.Redis, gen_id: str) -> list[bytes]:
    return list(client.scan_iter(match=f"*{gen_id}*"))


@pytest.mark.parametrize(
    ("mutation", "expected"),
    [
        (lambda s: s.replace("batch_size: 5", "batch_size: [5"), "malformed YAML"),
        (lambda s: s.replace("id: b,", "id: a,"), "duplicate candidate id 'a'"),
        (lambda s: s.replace("priority: low", "priority: lowest"), "candidate #1 (id 'b'), field 'priority'"),
        (lambda s: s.replace("evaluator: zdt2", "evaluator: nope"), "unknown evaluator 'nope'"),
        (lambda s: s.replace("batch_size: 5", "batch_size: 5\ntime_limit: 1\nsoft_time_limit: 2"),
         "must not be below soft_time_limit"),
    ],
)
def test_invalid_spec_exits_2_and_submits_nothing(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path, mutation: object, expected: str
) -> None:
    gen_id = f"bad-{tmp_path.name}"
    spec = tmp_path / "spec.yaml"
    spec.write_text(mutation(SPEC.format(gen_id=gen_id)))  # type: ignore[operator]
    done = evofleet("launch", str(spec), "--out", str(tmp_path / "r.jsonl"), broker=redis_url,
                    cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert expected in " ".join(done.stderr.split())
    assert str(spec) in " ".join(done.stderr.split()) or "spec" in done.stderr
    assert keys_of(redis_client, gen_id) == []
    assert not (tmp_path / "r.jsonl").exists()


def test_unknown_output_format_exits_2(redis_url: str, tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.format(gen_id="fmt"))
    done = evofleet("launch", str(spec), "--out", "r.txt", broker=redis_url, cwd=tmp_path)
    assert done.returncode == 2 and "cannot tell the output format" in done.stderr


def test_launch_against_deployment_exits_0_and_writes_results_and_summary(
    redis_url: str, session_worker: LocalWorker, tmp_path: Path
) -> None:
    gen_id = f"cli-{tmp_path.name}"
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.format(gen_id=gen_id))
    out = tmp_path / "out" / "results.jsonl"
    done = evofleet("launch", str(spec), "--out", str(out), broker=redis_url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["candidate_id"] for r in rows) == ["a", "b", "c", "d"]
    summary = json.loads((tmp_path / "out" / "results.summary.json").read_text())
    assert summary["status"] == "complete" and summary["counts"]["ok"] == 4
    front_ids = {m["candidate_id"] for m in summary["pareto_front"]}
    assert front_ids == {"a", "b", "c"}  # d is off the Pareto set (x[1:] != 0)
    assert "Pareto front (3 candidates)" in done.stdout

    again = evofleet("launch", str(spec), broker=redis_url, cwd=tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr


@pytest.mark.slow
def test_launch_in_local_mode_without_broker(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.format(gen_id="local-mode"))
    out = tmp_path / "results.csv"
    done = evofleet("launch", str(spec), "--out", str(out), "--workers", "2", broker=None,
                    cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "local mode" in done.stderr
    lines = out.read_text().splitlines()
    assert lines[0].startswith("generation_id,candidate_id,status") and len(lines) == 5
    workers = {line.split(",")[5] for line in lines[1:]}
    assert all(w.startswith("local") for w in workers)


@pytest.mark.slow
def test_demo_runs_in_local_mode(tmp_path: Path) -> None:
    done = evofleet("demo", "--candidates", "40", "--out", "demo.jsonl", broker=None, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert len((tmp_path / "demo.jsonl").read_text().splitlines()) == 40
    summary = json.loads((tmp_path / "demo.summary.json").read_text())
    assert summary["counts"]["ok"] == 40 and summary["pareto_front"]
    assert "best per objective" in done.stdout


def test_help_explains_every_command(tmp_path: Path) -> None:
    done = evofleet("--help", broker=None, cwd=tmp_path)
    assert done.returncode == 0
    for command in ("launch", "demo", "resume", "status", "results", "cancel", "worker", "workers"):
        assert command in done.stdout
    launch_help = evofleet("launch", "--help", broker=None, cwd=tmp_path)
    assert "--broker" in launch_help.stdout and "local mode" in launch_help.stdout
