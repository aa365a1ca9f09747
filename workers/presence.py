"""A worker announces itself in Redis when it is ready to consume, and withdraws at shutdown."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from celery.signals import worker_ready, worker_shutdown

from workers.devices import GPUS_ENV, parse_gpu_list
from workers.keys import WORKER_SLOTS
from workers.redis_client import client_for

PRESENCE_TTL_S = 24 * 3600


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
    try:
        client_for(sender.app.conf.result_backend).delete(_key(sender))
    except Exception:  # shutting down: Redis may already be gone
        pass
