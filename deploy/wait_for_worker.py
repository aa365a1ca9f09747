#!/usr/bin/env python3
"""The Procfile's flower entry runs this first: wait until a worker answers a ping.

Flower 2.2 asks the workers for their details (``inspect``) once, when it starts, and after that
only on ``/api/workers?refresh=1``: started together with the worker by ``honcho start``, it
asked before the worker was up and ``/api/workers`` stayed ``{}``. ``FLOWER_WAIT_WORKER_S``
(default 60) bounds the wait; Flower starts anyway after it.
"""

from __future__ import annotations

import os
import sys
import time

import redis

from workers.celery_app import app


def wait_for_worker(timeout_s: float) -> bool:
    """True once any worker answered a broadcast ping, False after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    client = redis.Redis.from_url(app.conf.broker_url, socket_connect_timeout=1, socket_timeout=1)
    while time.monotonic() < deadline:
        try:
            # Redis first, without Celery's long reconnection retries: honcho starts it with us.
            if client.ping() and app.control.ping(timeout=1.0):
                return True
        except redis.RedisError:
            time.sleep(0.5)
    return False


def main() -> None:
    timeout_s = float(os.environ.get("FLOWER_WAIT_WORKER_S", "60"))
    if not wait_for_worker(timeout_s):
        print(f"no worker answered within {timeout_s:g}s; starting Flower anyway "
              "(/api/workers?refresh=1 lists workers that start later)", file=sys.stderr)


if __name__ == "__main__":
    main()
