"""The CLI at a generation's edges: deadline (exit 3), status, cancel, results, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from orchestration.api import launcher_app
from orchestration.generation import CollectorBusy, Generation
from tests.acceptance.conftest import Cluster, recorded, wait_until
from tests.conftest import unique_id
from workers.contract import Status
from workers.ledger import Ledger

EVOFLEET = str(Path(sys.executable).parent / "evofleet")
FAULTY = "tests.fault_evaluators:faulty"
ROOT = Path(__file__).resolve().parents[2]


def _spec_file(
    tmp_path: Path, candidates: list[dict[str, Any]], **fields: Any
) -> tuple[str, Path]:
    spec = {
        "id": unique_id("cli"),
        "evaluator": FAULTY,
        "objectives": {"f": "max"},
        "batch_size": 5,
        "batch_timeout": 0.2,
        "soft_time_limit": 10,
        "time_limit": 12,
        "deadline": 60,
        "candidates": candidates,
        **fields,
    }
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    return str(spec["id"]), path


def _env(cluster: Cluster) -> dict[str, str]:
    # PYTHONPATH: the launcher checks that the spec's ``tests.…`` evaluator imports.
    return {**os.environ, "EVOFLEET_BROKER_URL": cluster.url, "PYTHONPATH": str(ROOT)}


def _cli(cluster: Cluster, *args: str, timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EVOFLEET, *args], env=_env(cluster), capture_output=True, text=True, timeout=timeout_s
    )


def _launch(cluster: Cluster, spec_path: Path, out: Path) -> subprocess.Popen[bytes]:
    """``evofleet launch`` in the background; its output goes to ``<out>.log``."""
    with out.with_suffix(".log").open("wb") as log:
        return subprocess.Popen(
            [EVOFLEET, "launch", str(spec_path), "--out", str(out), "--quiet"],
            env=_env(cluster), stdout=log, stderr=subprocess.STDOUT,
        )


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_deadline_records_timeouts_writes_partial_results_and_exits_3(
    cluster: Cluster, tmp_path: Path
) -> None:
    done = tmp_path / "done.log"
    quick = [{"id": f"q{i}", "params": {"value": i}} for i in range(4)]
    slow = [{"id": f"s{i}", "params": {"seconds": 4.0, "done_log": str(done)}} for i in range(4)]
    generation_id, spec_path = _spec_file(tmp_path, quick + slow, deadline=2.5)
    out = tmp_path / "results.jsonl"

    started = time.monotonic()
    launched = _cli(cluster, "launch", str(spec_path), "--out", str(out), "--quiet")
    elapsed = time.monotonic() - started

    assert launched.returncode == 3, launched.stdout + launched.stderr
    assert elapsed < 10
    rows = {row["candidate_id"]: row for row in _rows(out)}
    assert len(rows) == len(_rows(out)) == 8  # every candidate once
    assert all(rows[f"q{i}"]["status"] == "ok" for i in range(4))
    for i in range(4):
        assert rows[f"s{i}"]["status"] == "timeout"
        assert rows[f"s{i}"]["error"]["message"] == "generation deadline (2.5s) passed"
    ledger = Ledger(cluster.client, generation_id)
    assert ledger.status() == "partial"
    summary = json.loads((tmp_path / "results.jsonl.summary.json").read_text())
    assert summary["status"] == "partial" and summary["counts"]["timeout"] == 4
    # The evaluations that were running finish later: their results do not overwrite.
    finished = wait_until(lambda: done.exists() and done.read_text().split(), 20,
                          "the late evaluations to finish")
    assert finished
    time.sleep(0.5)  # the worker records right after the evaluator returns
    for i in range(4):
        late = ledger.result(f"s{i}")
        assert late is not None and late.status is Status.timeout
    assert recorded(cluster.client, generation_id) == 8
    assert cluster.client.xlen(ledger.keys.stream) == 8


@pytest.mark.slow
def test_status_then_cancel_ends_the_launcher_and_results_exports_everything(
    cluster: Cluster, tmp_path: Path
) -> None:
    # 8 s of work for 2 pool children: the two CLI calls below must come first even on a busy
    # machine (at 0.4 s each, a generation ended in 3.5 s while they took 5 s under load).
    candidates = [
        {"id": f"c{i}", "priority": ("high", "low")[i % 2], "params": {"seconds": 1.0}}
        for i in range(16)  # 8 s on 2 children: status and cancel arrive in time under load
    ]
    generation_id, spec_path = _spec_file(tmp_path, candidates)
    launcher = _launch(cluster, spec_path, tmp_path / "launch.jsonl")
    try:
        wait_until(lambda: recorded(cluster.client, generation_id) >= 2, 30, "first results")
        shown = _cli(cluster, "status", generation_id, "--json")
        assert shown.returncode == 0, shown.stderr
        report = json.loads(shown.stdout)
        assert report["status"] == "running" and report["total"] == len(candidates)
        assert report["recorded"] >= 2 and report["counts"]["ok"] == report["recorded"]
        assert report["in_flight"] == report["submitted"] - report["recorded"] > 0
        assert set(report["queued_or_running"]) == {"critical", "high", "normal", "low"}
        assert sum(report["queued_or_running"].values()) == report["in_flight"]
        assert report["elapsed_s"] > 0 and report["eta_s"] is not None and report["eta_s"] > 0

        cancelled = _cli(cluster, "cancel", generation_id)
        assert cancelled.returncode == 0, cancelled.stderr
        assert launcher.wait(timeout=20) == 3
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait(10)
    ledger = Ledger(cluster.client, generation_id)
    assert ledger.status() == "cancelled"
    after = json.loads(_cli(cluster, "status", generation_id, "--json").stdout)
    assert after["status"] == "cancelled" and after["recorded"] == len(candidates)
    assert after["counts"]["cancelled"] >= 1 and after["eta_s"] is None

    export = tmp_path / "export.jsonl"
    exported = _cli(cluster, "results", generation_id, "--out", str(export))
    assert exported.returncode == 0, exported.stderr
    rows = _rows(export)
    assert sorted(r["candidate_id"] for r in rows) == sorted(f"c{i}" for i in range(len(candidates)))
    assert {r["status"] for r in rows} <= {"ok", "cancelled"}
    assert sum(r["status"] == "cancelled" for r in rows) == after["counts"]["cancelled"]
    assert _rows(tmp_path / "launch.jsonl") == rows  # the launcher wrote the same, same order
    assert _cli(cluster, "cancel", generation_id).returncode == 0  # already ended: still 0


@pytest.mark.slow
def test_resume_after_the_launcher_is_killed_produces_the_complete_file(
    cluster: Cluster, tmp_path: Path
) -> None:
    candidates = [{"id": f"c{i}", "params": {"seconds": 0.3, "value": i}} for i in range(14)]
    generation_id, spec_path = _spec_file(tmp_path, candidates, max_in_flight=3)
    out = tmp_path / "results.jsonl"
    launcher = _launch(cluster, spec_path, out)
    try:
        wait_until(lambda: recorded(cluster.client, generation_id) >= 3, 30, "first results")
        # While the launcher lives, nobody else may collect (it would submit twice).
        rival = Generation(launcher_app(cluster.url), cluster.client, generation_id)
        with pytest.raises(CollectorBusy):
            rival.claim(timeout_s=0.3)
    finally:
        launcher.send_signal(signal.SIGKILL)
        launcher.wait(10)
    state = Ledger(cluster.client, generation_id).state()
    assert int(state["submitted"]) < len(candidates)  # resume has to submit the rest

    resumed = _cli(cluster, "resume", generation_id, "--out", str(out), "--quiet", timeout_s=60)

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    rows = _rows(out)
    assert sorted(r["candidate_id"] for r in rows) == sorted(f"c{i}" for i in range(len(candidates)))
    assert {r["status"] for r in rows} == {"ok"}
    assert {r["candidate_id"]: r["scores"]["f"] for r in rows} == {
        f"c{i}": float(i) for i in range(14)
    }
    assert Ledger(cluster.client, generation_id).status() == "complete"
