"""A worker announces itself in Redis when it is ready to consume, and withdraws at shutdown."""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import redis
from celery.signals import worker_ready, worker_shutdown
from redis.backoff import NoBackoff
from redis.retry import Retry

from workers.devices import GPUS_ENV, parse_gpu_list
from workers.keys import WORKER_SLOTS
from workers.redis_client import client_for

PRESENCE_TTL_S = 24 * 3600
logger = logging.getLogger(__name__)


def _key(sender: Any) -> str:
    return WORKER_SLOTS.format(hostname=sender.hostname)


@worker_ready.connect
def announce(sender: Any = None, **_: Any) -> None:
    """Record hostname, concurrency and GPUs: local mode waits on this key."""
    app = sender.app
    info = {
        "hostname": sender.hostname,
        "concurrency": sender.controller.concurrency if sender.controller else None,
        "gpus": parse_gpu_list(os.environ.get(GPUS_ENV)),
        "pid": os.getpid(),
        "ready_at": time.time(),
    }
    client_for(app.conf.result_backend).set(_key(sender), json.dumps(info), ex=PRESENCE_TTL_S)


@worker_shutdown.connect
def withdraw(sender: Any = None, **_: Any) -> None:
    """Delete the presence record; give up at once if Redis is gone (it may stop first)."""
    client = redis.Redis.from_url(
        sender.app.conf.result_backend, socket_connect_timeout=1, socket_timeout=1,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        client.delete(_key(sender))
    except redis.RedisError:
        logger.info("presence record of %s not withdrawn: Redis unreachable", sender.hostname)
    finally:
        client.close()
