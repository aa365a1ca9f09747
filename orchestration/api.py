"""The Python API for optimizers that drive evofleet from code: ``launch`` and ``attach``."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from functools import lru_cache
from pathlib import Path
from typing import Any

import redis
from celery import Celery
from kombu.utils.url import maybe_sanitize_url
from redis.backoff import NoBackoff
from redis.retry import Retry

from orchestration.connections import SHARED, LauncherConnections
from orchestration.generation import (
    COLLECTOR_LEASE_S,
    BatchCallback,
    Generation,
    collector_token,
)
from orchestration.local_cluster import local_cluster
from orchestration.settings import LaunchSettings
from orchestration.sinks import Sink, check_output, open_sink
from orchestration.submit import create_generation
from workers.artifacts import as_store_url, check_store_url, load_artifact
from workers.celery_app import make_app
from workers.contract import Candidate, EvaluationResult, GenerationSpec
from workers.ledger import Ledger
from workers.outputs import load_feedback, load_outputs
from workers.redis_client import connect
from workers.settings import ENV_PREFIX

__all__ = ["attach", "launch", "load_artifact", "load_feedback", "load_outputs"]
logger = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 5.0  # the PING before a launch against an already known deployment
SHARED_MAX_CONNECTIONS = 10_000  # generations one process may run at once against a deployment

def launcher_app(broker_url: str, settings: LaunchSettings | None = None) -> Celery:
    """A Celery app for the launching side (it sends tasks by name, imports no GPU code)."""
    settings = settings or LaunchSettings()
    return make_app(settings.worker_settings(broker_url), name="evofleet-launcher")


class BrokerUnreachable(ValueError):
    """The broker URL leads to no Redis that accepts us: down, wrong password, TLS mismatch.

    ``down``: nothing answered (worth waiting for); otherwise the URL or credentials are wrong.
    """

    def __init__(self, message: str, *, down: bool = False) -> None:
        super().__init__(message)
        self.down = down


def check_broker(url: str, timeout_s: float = 5.0) -> None:
    """One PING, no retries: a clear error within ``timeout_s`` instead of a long retry loop."""
    client = _probe_client(url, timeout_s, retries=0)
    try:
        _ping(client, url)
    finally:
        client.close()


def _probe_client(url: str, timeout_s: float, *, retries: int) -> redis.Redis:
    try:
        return redis.Redis.from_url(
            url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s,
            retry=Retry(NoBackoff(), retries),
        )
    except ValueError as exc:
        raise BrokerUnreachable(
            f"not a Redis URL: {maybe_sanitize_url(url)!r} ({exc}); expected "
            "redis://[:password@]host:port/db or rediss://... for TLS"
        ) from None


def _ping(client: redis.Redis, url: str) -> None:
    """PING, each failure turned into BrokerUnreachable saying what is wrong."""
    where = maybe_sanitize_url(url)
    try:
        client.ping()
    except (redis.AuthenticationError, redis.ResponseError) as exc:
        if not _auth_refused(exc):
            raise BrokerUnreachable(
                f"{where} did not answer like Redis ({type(exc).__name__}: {exc}); is it a "
                "Redis server?"
            ) from None
        if client.connection_pool.connection_kwargs.get("password") is None:
            # Redis's own reply (NOAUTH, or a paragraph about HELLO) does not say what to do.
            raise BrokerUnreachable(
                f"Redis at {where} requires a password; give it in the URL: "
                "redis://:PASSWORD@host:port/db"
            ) from None
        raise BrokerUnreachable(
            f"Redis at {where} refused the credentials ({exc}); give the password in the URL: "
            "redis://:PASSWORD@host:port/db"
        ) from None
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        hint = " (rediss:// against a server without TLS?)" if url.startswith("rediss:") else ""
        raise BrokerUnreachable(f"cannot reach Redis at {where}: {exc}{hint}", down=True) from None
    except redis.RedisError as exc:
        raise BrokerUnreachable(
            f"{where} did not answer like Redis ({type(exc).__name__}: {exc}); is it a Redis server?"
        ) from None


def shared_connections(broker_url: str, settings: LaunchSettings) -> LauncherConnections:
    """This process's app and clients for a deployment, checked with one PING per launch.

    The first launch against a URL runs the full ``check_broker``; later ones reuse the same app
    and connections (an optimizer launches thousands of generations), closed at exit.
    """
    backend_url = settings.result_backend or broker_url
    key = SHARED.key(broker_url, backend_url, settings.model_dump_json())

    def open_connections() -> LauncherConnections:
        check_broker(broker_url)
        return LauncherConnections(
            app=launcher_app(broker_url, settings),
            # Each running generation's collector holds a connection while XREAD blocks.
            client=connect(backend_url, max_connections=SHARED_MAX_CONNECTIONS),
            # One retry: a socket a Redis restart broke is reconnected, not reported as down.
            probe=_probe_client(broker_url, PROBE_TIMEOUT_S, retries=1),
        )

    connections, opened = SHARED.get_or_open(key, open_connections)
    if not opened:
        _ping(connections.probe, broker_url)
    return connections


def _auth_refused(exc: redis.RedisError) -> bool:
    """Redis refused us for want of (the right) credentials: redis-py raises an
    AuthenticationError, or a ResponseError ``NOAUTH``, depending on the command."""
    text = str(exc)
    return isinstance(exc, redis.AuthenticationError) or text.startswith("NOAUTH") or (
        "authenticat" in text.lower()
    )


def _sinks(out: str | Path | None, fmt: str | None, objectives: list[str]) -> list[Sink]:
    return [open_sink(out, objectives, fmt)] if out is not None else []


def _check_output(out: str | Path | None, fmt: str | None) -> None:
    if out is not None:
        check_output(out, fmt)  # before anything is submitted: a bad path submits nothing


def with_artifact_store(
    spec: GenerationSpec, settings: LaunchSettings, out: str | Path | None, *, local: bool
) -> GenerationSpec:
    """The spec with the store its artifacts go to: its own, else ``EVOFLEET_ARTIFACT_STORE``,
    else (local mode) ``<results>.artifacts/`` beside the results file or a temporary folder.
    Against a deployment with none of these, the workers' own setting applies."""
    url = spec.artifact_store or settings.artifact_store
    if url is None and local:
        if out is not None:
            folder = Path(out).with_name(Path(out).stem + ".artifacts")
        else:
            folder = Path(tempfile.gettempdir()) / f"evofleet-artifacts-{spec.id}"
            logger.info("generation %s: artifacts (if any) go to %s", spec.id, folder)
        url = str(folder)
    if url is None:
        return spec
    return spec.model_copy(update={"artifact_store": check_store_url(as_store_url(url))})


@lru_cache(maxsize=8)
def _settings_for(environment: tuple[tuple[str, str], ...]) -> LaunchSettings:
    return LaunchSettings()


def _environment_settings() -> LaunchSettings:
    """LaunchSettings from the environment, read again only when an EVOFLEET_* variable changed
    (reading them costs more than launching a small generation)."""
    return _settings_for(tuple(sorted(
        (name, value) for name, value in os.environ.items()
        if name.upper().startswith(ENV_PREFIX)
    )))


def launch(
    spec: GenerationSpec,
    *,
    broker_url: str | None = None,
    settings: LaunchSettings | None = None,
    out: str | Path | None = None,
    fmt: str | None = None,
    on_batch: BatchCallback | None = None,
    candidates: Iterable[Candidate | dict[str, Any]] | None = None,
) -> Generation:
    """Submit ``spec`` and return its running Generation.

    ``candidates`` replaces the spec's own list with any iterable (a generator, a
    ``CandidateFile``), streamed into Redis in batches. With no broker URL (argument,
    ``EVOFLEET_BROKER_URL``), a private redis-server and local workers are started and
    stopped again when the generation ends. Launches against one deployment share this
    process's Celery app and Redis connections (see ``orchestration.connections``).
    """
    settings = settings or _environment_settings()
    _check_output(out, fmt)
    stack = ExitStack()  # what the generation's end stops (local mode's cluster)
    failed = ExitStack()  # what a failure to start it closes as well
    url = broker_url or settings.broker_url
    local = url is None
    spec = with_artifact_store(spec, settings, out, local=local)
    if url is None:
        url = stack.enter_context(
            local_cluster(
                workers=settings.local_workers,
                concurrency=settings.local_concurrency,
                redis_binary=settings.redis_server,
            )
        )
    try:
        if local:  # a private Redis that ends with the generation: connections of its own
            app = launcher_app(url, settings)
            client = connect(settings.result_backend or url)
            failed.callback(client.close)
        else:
            shared = shared_connections(url, settings)
            app, client = shared.app, shared.client
        # The collector lease is taken with the generation's state: one round trip less.
        ledger, lease = Ledger(client, spec.id), collector_token()
        create_generation(app, ledger, spec, candidates, collector=lease, lease_s=COLLECTOR_LEASE_S)
        generation = Generation(
            app,
            client,
            spec.id,
            sinks=_sinks(out, fmt, list(spec.objectives)),
            on_batch=on_batch,
            on_end=stack.close,
            owns_connections=local,
            created=ledger.created,
            lease=lease,
        )
        generation.submitter.prime(ledger.first_stored)
    except BaseException:
        failed.close()
        stack.close()
        raise
    generation.local = local
    return generation.start()


def launch_and_collect(
    spec: GenerationSpec,
    candidates: Iterable[Candidate | dict[str, Any]],
    *,
    broker_url: str | None = None,
    settings: LaunchSettings | None = None,
    timeout: float | None = None,
    on_launch: Callable[[Generation], object] | None = None,
) -> list[EvaluationResult]:
    """Launch, wait, and return every result, as an optimizer's loop wants them: from the
    collector's own batches (Redis is read again only if some were missed)."""
    collected: list[EvaluationResult] = []
    generation = launch(spec, broker_url=broker_url, settings=settings, candidates=candidates,
                        on_batch=collected.extend)
    if on_launch is not None:
        on_launch(generation)
    generation.wait(timeout)
    return generation.results_or(collected)


def attach(
    generation_id: str,
    *,
    broker_url: str,
    settings: LaunchSettings | None = None,
    out: str | Path | None = None,
    fmt: str | None = None,
    on_batch: BatchCallback | None = None,
) -> Generation:
    """Re-attach to a generation (after the launcher died): submit what is left, collect all.

    The output file is written anew from the start of the generation's result stream, so it
    ends up with every result exactly once. Waits a few seconds for a dead launcher's collector
    lease to lapse; raises CollectorBusy if a live process still collects the generation.
    """
    settings = settings or LaunchSettings()
    _check_output(out, fmt)
    check_broker(broker_url)
    app = launcher_app(broker_url, settings)
    client = connect(settings.result_backend or broker_url)
    ledger = Ledger(client, generation_id)
    objectives = list(ledger.header().objectives)
    generation = Generation(app, client, generation_id, on_batch=on_batch)
    # Claim before opening the output: a live launcher may still be writing to it.
    generation.claim()
    generation.sinks = _sinks(out, fmt, objectives)
    return generation.start()
