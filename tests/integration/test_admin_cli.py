"""``evofleet generations``, ``evofleet delete``, ``--version`` and ``workers --json`` against a
real Redis (and the session's real worker for ``workers``)."""

from __future__ import annotations

import importlib.metadata
import json
import time

import pytest
import redis
from typer.testing import CliRunner

from orchestration.api import launcher_app
from orchestration.cli import app
from orchestration.local_cluster import LocalWorker
from orchestration.submit import create_generation, group_id_for
from tests.conftest import make_spec
from workers.contract import EvaluationResult, Status
from workers.keys import GENERATIONS_INDEX
from workers.ledger import Ledger

runner = CliRunner()


def created(client: redis.Redis, url: str, count: int = 3) -> Ledger:
    """A running generation of ``count`` candidates (no worker needed), with its chord keys."""
    spec = make_spec([{"id": f"c{i}", "params": {"x": [0.1, 0.0]}} for i in range(count)])
    ledger = Ledger(client, spec.id)
    launcher = launcher_app(url)
    create_generation(launcher, ledger, spec)
    launcher.close()
    return ledger


def keys_of(client: redis.Redis, generation_id: str) -> list[bytes]:
    return sorted(client.scan_iter(match=f"*{generation_id}*"))


def test_generations_lists_status_counts_and_age(redis_url: str, redis_client: redis.Redis) -> None:
    done = created(redis_client, redis_url, 2)
    done.record(EvaluationResult(generation_id=done.generation_id, candidate_id="c0", status=Status.ok))
    done.record(EvaluationResult(generation_id=done.generation_id, candidate_id="c1",
                                 status=Status.error))
    done.complete({"status": "complete"}, retention_s=3600)
    running = created(redis_client, redis_url, 3)
    redis_client.zadd(GENERATIONS_INDEX, {"expired-gen": time.time()})  # its keys are gone

    result = runner.invoke(app, ["generations", "--broker", redis_url, "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["id"]: row for row in json.loads(result.stdout)}
    assert rows[running.generation_id]["status"] == "running"
    assert rows[running.generation_id]["total"] == 3
    assert rows[done.generation_id]["status"] == "complete"
    assert rows[done.generation_id]["counts"] == {
        "ok": 1, "error": 1, "timeout": 0, "crashed": 0, "cancelled": 0}
    assert 0 <= rows[done.generation_id]["age_s"] < 120
    newest_first = [row["id"] for row in json.loads(result.stdout)]
    assert newest_first.index(running.generation_id) < newest_first.index(done.generation_id)
    assert "expired-gen" not in rows
    assert redis_client.zscore(GENERATIONS_INDEX, "expired-gen") is None  # dropped from the index

    table = runner.invoke(app, ["generations", "--broker", redis_url])
    assert table.exit_code == 0
    assert running.generation_id in table.stdout and "complete" in table.stdout


def test_delete_refuses_a_running_generation_unless_forced(
    redis_url: str, redis_client: redis.Redis
) -> None:
    ledger = created(redis_client, redis_url)
    gen = ledger.generation_id
    launcher = launcher_app(redis_url)
    chord_size_key = launcher.backend.get_key_for_group(group_id_for(gen), ".s")
    launcher.close()
    assert redis_client.exists(chord_size_key)

    refused = runner.invoke(app, ["delete", gen, "--broker", redis_url])
    assert refused.exit_code == 2
    assert f"evofleet delete {gen} --force" in refused.stderr
    assert ledger.status() == "running"

    forced = runner.invoke(app, ["delete", gen, "--broker", redis_url, "--force"])
    assert forced.exit_code == 0, forced.output
    assert "3 candidates recorded as cancelled" in forced.stderr
    assert keys_of(redis_client, gen) == []  # ledger keys and the chord's counters
    assert redis_client.zscore(GENERATIONS_INDEX, gen) is None

    # A worker still holding one of its messages neither evaluates nor re-creates keys.
    assert ledger.begin(["c0"], count_attempts=True) is None
    late = EvaluationResult(generation_id=gen, candidate_id="c0", status=Status.ok)
    assert ledger.record(late) is False
    assert keys_of(redis_client, gen) == []

    missing = runner.invoke(app, ["delete", gen, "--broker", redis_url])
    assert missing.exit_code == 2
    assert "no generation" in missing.stderr


def test_reusing_an_id_says_how_to_delete_or_resume(redis_url: str, redis_client: redis.Redis) -> None:
    ledger = created(redis_client, redis_url)
    spec = make_spec([{"id": "again"}], id=ledger.generation_id)
    with pytest.raises(ValueError, match=(
        f"already exists in Redis: `evofleet delete {spec.id}` removes it, "
        f"`evofleet resume {spec.id}` re-attaches"
    )):
        Ledger(redis_client, spec.id).create(spec)
    ledger.close("cancelled")
    assert runner.invoke(app, ["delete", spec.id, "--broker", redis_url]).exit_code == 0
    assert Ledger(redis_client, spec.id).create(spec) == 1  # the id is free again


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"evofleet {importlib.metadata.version('evofleet')}"


def test_workers_json(redis_url: str, session_worker: LocalWorker) -> None:
    result = runner.invoke(app, ["workers", "--broker", redis_url, "--json", "--timeout", "3"])
    assert result.exit_code == 0, result.output
    rows = {row["hostname"]: row for row in json.loads(result.stdout)}
    assert rows[session_worker.hostname]["children"] == 2
    assert rows[session_worker.hostname]["gpus"] == []


@pytest.mark.parametrize("gen", ["v2[/bold]", "[red]" + "x" * 120])
def test_delete_errors_are_one_plain_line_at_80_columns(redis_url: str, gen: str) -> None:
    # The runner's output is no terminal, so Rich wraps at 80 columns unless told not to; an
    # id like "v2[/bold]" crashed the old error (Rich markup), a long one was wrapped.
    done = runner.invoke(app, ["delete", gen, "--broker", redis_url])
    assert done.exit_code == 2, done.output
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: no generation ")
    assert gen[:40] in done.stderr


def test_generations_errors_are_one_line_at_80_columns() -> None:
    url = "redis://127.0.0.1:1/0"  # nothing listens on port 1: a long "cannot reach" message
    done = runner.invoke(app, ["generations", "--broker", url])
    assert done.exit_code == 2, done.output
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: cannot reach Redis")
