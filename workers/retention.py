"""Artifacts live as long as their generation: once its Redis keys expire (or vanish in a
crash), a sweep deletes its folder in every store it wrote to."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis
from celery.signals import worker_ready, worker_shutdown

from workers.artifacts import ArtifactStore, ArtifactStoreError
from workers.keys import ARTIFACT_STORES, ARTIFACT_SWEEP_LOCK, GenerationKeys
from workers.recent import RecentMap
from workers.redis_client import connect

logger = logging.getLogger(__name__)
_REGISTERED_KEPT = 1024  # a forgotten one costs one idempotent ZADD NX again
# A long-lived child sees endless generations.
_registered: RecentMap[tuple[int, str, str], bool] = RecentMap(_REGISTERED_KEPT)
_stop = threading.Event()


def register_store(client: redis.Redis, generation_id: str, url: str) -> None:
    """Note that ``generation_id`` writes artifacts to ``url`` (once per process)."""
    key = (os.getpid(), generation_id, url)
    if _registered.get(key):
        return
    client.zadd(ARTIFACT_STORES, {json.dumps([generation_id, url]): time.time()}, nx=True)
    _registered.put(key, True)


@dataclass
class SweepReport:
    """What a sweep deleted, and where a store failed (kept for the next sweep)."""

    removed: list[tuple[str, str]] = field(default_factory=list)  # (store URL, generation id)
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (store, generation, why)


def _gone(client: redis.Redis, generation_id: str) -> bool:
    return not client.exists(GenerationKeys(generation_id).state)


def sweep(
    client: redis.Redis,
    *,
    stores: Iterable[str] = (),
    options: Mapping[str, Any] | None = None,
    dry_run: bool = False,
) -> SweepReport:
    """Delete the artifacts of every generation no longer in Redis.

    Looks at the generations registered by the workers and, for each URL in ``stores``, at
    every generation folder found there (what a Redis that lost its data forgot). Only folders
    that evofleet marked as a generation's are deleted.
    """
    report = SweepReport()
    done: set[tuple[str, str]] = set()
    for member, _score in client.zscan_iter(ARTIFACT_STORES):
        generation_id, url = json.loads(member)
        done.add((url, generation_id))
        if not _gone(client, generation_id):
            continue
        if _delete(url, generation_id, options, dry_run, report) and not dry_run:
            client.zrem(ARTIFACT_STORES, member)
    for url in stores:
        try:
            found = ArtifactStore(url, options).generations()
        except (ArtifactStoreError, OSError) as exc:
            report.failed.append((url, "*", str(exc)))
            continue
        for generation_id in found:
            if (url, generation_id) not in done and _gone(client, generation_id):
                _delete(url, generation_id, options, dry_run, report)
    return report


def _delete(
    url: str, generation_id: str, options: Mapping[str, Any] | None, dry_run: bool,
    report: SweepReport,
) -> bool:
    try:
        store = ArtifactStore(url, options)
        if not dry_run:
            store.delete_generation(generation_id)
    except (ArtifactStoreError, OSError) as exc:
        report.failed.append((url, generation_id, str(exc)))
        return False
    report.removed.append((url, generation_id))
    return True


def _sweep_forever(url: str, interval_s: float, options: Mapping[str, Any], who: str) -> None:
    client = connect(url)
    while not _stop.wait(interval_s):
        try:
            # One worker of the deployment sweeps per interval; the lock lapses on its own.
            if client.zcard(ARTIFACT_STORES) and client.set(
                ARTIFACT_SWEEP_LOCK, who, nx=True, ex=max(1, int(interval_s))
            ):
                report = sweep(client, options=options)
                if report.removed or report.failed:
                    logger.info("artifact sweep: removed %d generation(s), %d failed: %s",
                                len(report.removed), len(report.failed), report.failed[:3])
        except Exception:  # Redis away, a store away: try again next interval
            logger.warning("artifact sweep failed; retrying in %ss", interval_s, exc_info=True)
    client.close()


@worker_ready.connect
def start_sweeper(sender: Any = None, **_: Any) -> None:
    """Sweep expired generations' artifacts every ``artifact_sweep_s`` in a daemon thread."""
    settings = getattr(sender.app.conf, "evofleet_settings", None)
    if settings is None:  # another app's worker in this process
        return
    _stop.clear()
    threading.Thread(
        target=_sweep_forever,
        args=(sender.app.conf.result_backend, settings.artifact_sweep_s,
              settings.artifact_store_options, sender.hostname),
        name="evofleet-artifact-sweep",
        daemon=True,
    ).start()


@worker_shutdown.connect
def stop_sweeper(**_: Any) -> None:
    _stop.set()
