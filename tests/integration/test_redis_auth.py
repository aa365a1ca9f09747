"""A password-protected Redis end to end, and clear, quick errors for a wrong or missing password."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml

from orchestration.api import BrokerUnreachable, launch
from orchestration.local_cluster import LocalRedis, LocalWorker
from tests.conftest import make_spec, run_spec
from workers.ledger import Ledger

ROOT = Path(__file__).resolve().parents[2]
EVOFLEET = str(Path(sys.executable).with_name("evofleet"))
PASSWORD = "evo-s3cret_pw"


@pytest.fixture(scope="module")
def locked_redis() -> Iterator[LocalRedis]:
    """A redis-server started with ``--requirepass``."""
    server = LocalRedis(password=PASSWORD).start()
    yield server
    server.stop()


def cli_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("EVOFLEET_")}


@pytest.mark.slow
def test_generation_against_a_password_protected_redis(
    locked_redis: LocalRedis, tmp_path: Path
) -> None:
    url = locked_redis.url
    assert f":{PASSWORD}@" in url
    worker = LocalWorker(url, concurrency=2, hostname="auth@127.0.0.1",
                         log_path=tmp_path / "worker.log")
    worker.start()
    client = redis.Redis.from_url(url)
    try:
        worker.wait_ready(client, timeout_s=60)
        spec = make_spec([{"id": f"c{i}", "params": {"x": [i / 8, 0.0]}} for i in range(8)])
        generation = run_spec(spec, url, timeout_s=60)
        assert generation.wait(0) == "complete"
        results = list(Ledger(client, spec.id).iter_results())
        assert len(results) == 8 and {r.status.value for r in results} == {"ok"}
        assert {r.worker for r in results} == {"auth@127.0.0.1"}
        listing = subprocess.run([EVOFLEET, "workers", "--broker", url, "--timeout", "1"],
                                 env={**cli_env(), "COLUMNS": "200"}, cwd=ROOT,
                                 capture_output=True, text=True, timeout=60)
        assert listing.returncode == 0 and "auth@127.0.0.1" in listing.stdout
    finally:
        client.close()
        worker.stop()
    # The password protects it: without one, Redis refuses.
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=locked_redis.port).ping()


def test_wrong_or_missing_password_is_a_quick_clear_error(
    locked_redis: LocalRedis, tmp_path: Path
) -> None:
    port = locked_redis.port
    spec = make_spec([{"id": "c0", "params": {"x": [0.5, 0.0]}}])
    for url in (f"redis://:wrong@127.0.0.1:{port}/0", f"redis://127.0.0.1:{port}/0"):
        started = time.monotonic()
        with pytest.raises(BrokerUnreachable, match="refused the credentials") as caught:
            launch(spec, broker_url=url)
        assert time.monotonic() - started < 5
        assert "wrong" not in str(caught.value)  # the password is masked in the message

    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    started = time.monotonic()
    cli = subprocess.run(
        [EVOFLEET, "launch", str(spec_file), "--broker", f"redis://:wrong@127.0.0.1:{port}/0"],
        env=cli_env(), cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert cli.returncode == 2, cli.stderr
    assert "refused the credentials" in cli.stderr and "Traceback" not in cli.stderr
    assert time.monotonic() - started < 30  # mostly interpreter start; was a 34 s retry loop

    worker = subprocess.run(
        [EVOFLEET, "worker", "--broker", f"redis://:wrong@127.0.0.1:{port}/0", "--gpus", "auto",
         "--concurrency", "1"],
        env=cli_env(), cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert worker.returncode == 2 and "refused the credentials" in worker.stderr
