"""Where an integration's generations run: a deployment's broker, or one local cluster kept
for the optimizer's whole run (starting one per generation would cost seconds each)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from orchestration.api import check_broker
from orchestration.local_cluster import local_cluster
from orchestration.settings import LaunchSettings

RESERVED_OPTIONS = frozenset({"id", "evaluator", "objectives", "candidates"})


def spec_fields(
    defaults: Mapping[str, Any], options: Mapping[str, Any] | None
) -> dict[str, Any]:
    """An integration's GenerationSpec fields: its defaults, overridden by the user's; the
    fields the integration sets itself are refused (one id for every generation would mix them)."""
    reserved = sorted(RESERVED_OPTIONS & set(options or {}))
    if reserved:
        raise ValueError(f"generation_options may not set {', '.join(reserved)}: the integration does")
    return {**defaults, **(options or {})}


@contextmanager
def fleet(
    broker_url: str | None = None,
    *,
    settings: LaunchSettings | None = None,
    workers: int | None = None,
    concurrency: int | None = None,
) -> Iterator[str]:
    """Yield the broker URL generations are launched against for the block's duration.

    Args:
        broker_url: A deployment's Redis URL; ``EVOFLEET_BROKER_URL`` when None. Checked with
            one PING (BrokerUnreachable otherwise).
        settings: Launcher settings (local workers, redis-server binary).
        workers: Local mode: worker processes (default ``EVOFLEET_LOCAL_WORKERS``).
        concurrency: Local mode: pool children per worker (default ``EVOFLEET_LOCAL_CONCURRENCY``).

    With no URL at all, a private redis-server and local workers run until the block ends.
    """
    settings = settings or LaunchSettings()
    url = broker_url or settings.broker_url
    if url is not None:
        check_broker(url)
        yield url
        return
    with local_cluster(
        workers=workers or settings.local_workers,
        concurrency=concurrency or settings.local_concurrency,
        redis_binary=settings.redis_server,
    ) as local_url:
        yield local_url

