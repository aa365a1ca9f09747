"""The Celery app and every setting that shapes delivery and failure, each with its reason."""

from __future__ import annotations

import socket
from typing import Any

from celery import Celery
from kombu.entity import Queue

from workers.contract import PRIORITIES
from workers.reaper import LostChildReaper
from workers.settings import WorkerSettings
from workers.visibility import KeepVisible

# Idle 60 s, then a probe every 10 s, dead after 3 unanswered (Linux option names).
TCP_KEEPALIVE = {
    getattr(socket, name): value
    for name, value in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3))
    if hasattr(socket, name)
}


def celery_config(settings: WorkerSettings) -> dict[str, Any]:
    """Celery configuration for one deployment."""
    transport_options: dict[str, Any] = {
        # A -Q list is drained strictly in its order (round robin would interleave levels).
        "queue_order_strategy": "priority",
        # An unacked message (its worker node died) comes back after this long.
        "visibility_timeout": settings.visibility_timeout_s,
        # A live worker looks for such messages every interval (kombu's default scans only
        # every 10th 10 s tick, so a lost node's candidates waited up to 100 s more).
        "unacked_restore_interval": max(1, min(10, settings.visibility_timeout_s // 4)),
        "unacked_restore_throttle": 1,
        # A node cut off while it held the sweep's lock kept every node from re-delivering
        # for kombu's default 300 s (tests/multihost partition); a sweep takes milliseconds.
        "unacked_mutex_expire": 30,
        # Across racks a partition leaves connections half-open (no RST). Without a socket
        # timeout a synchronous command on one (the restore sweep's lock, an ack, an event)
        # blocked the worker's event loop until TCP gave up: a node cut off 90 s still took
        # no work after the heal (tests/multihost). With it the command fails and reconnects.
        "socket_timeout": 10,
        # An unreachable Redis host fails a reconnect in seconds, not after ~2 min of SYNs.
        "socket_connect_timeout": 5,
        # Kernel probes close an idle connection to a vanished host within ~90 s.
        "socket_keepalive": True,
        "socket_keepalive_options": TCP_KEEPALIVE,
        # A timed-out command is retried once on a fresh connection before Celery reconnects.
        "retry_on_timeout": True,
        # PING the pub/sub and BRPOP connections every 10 s; an overdue reply drops them
        # (broker_heartbeat is AMQP-only: this is the Redis transport's liveness check).
        "health_check_interval": 10,
    }
    return {
        "broker_url": settings.broker_url,
        "result_backend": settings.backend_url,
        # JSON only: a pickled message is refused, never executed.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_queues": [Queue(name) for name in PRIORITIES],
        "task_default_queue": "normal",
        "task_create_missing_queues": False,
        "broker_transport_options": transport_options,
        "result_backend_transport_options": {"retry_policy": {"timeout": 30.0}},
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "redis_backend_health_check_interval": 10,
        "redis_retry_on_timeout": True,
        # The result backend's connections get the same bounds (Celery's default read timeout
        # is 120 s and its connect timeout unbounded).
        "redis_socket_timeout": 30,
        "redis_socket_connect_timeout": 5,
        "redis_socket_keepalive": True,
        # Late ack + one message per child: a worker holds no backlog that a
        # critical candidate would have to wait behind, and a lost node's
        # message is re-delivered.
        "task_acks_late": True,
        "worker_prefetch_multiplier": 1,
        "worker_disable_prefetch": True,
        # Our Request class turns a lost child into a result; Celery's own
        # re-queue would loop forever on a poison candidate.
        "task_reject_on_worker_lost": False,
        "task_acks_on_failure_or_timeout": True,
        # A running evaluation outlives a lost broker connection and is acknowledged on the
        # next one (Redis acks by delivery tag); cancelling it would waste a GPU's work.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        # Off: both tasks keep no Celery result and are idempotent through the ledger, so
        # Celery's check of a re-delivered message (a backend GET) could never find one, and
        # when the backend was unreachable it failed the task outside its body: lost.
        "worker_deduplicate_successful_tasks": False,
        "result_expires": settings.retention_s,
        "result_chord_ordered": True,
        "worker_max_tasks_per_child": settings.max_tasks_per_child,
        "worker_max_memory_per_child": (
            settings.max_memory_per_child_mb * 1024 if settings.max_memory_per_child_mb else None
        ),
        # Flower sees tasks only with events on (they cost the worker ~1 ms of CPU a task);
        # task-sent comes from whoever publishes (a pool child, for the chord body).
        "worker_send_task_events": settings.task_events,
        "task_send_sent_event": settings.task_events,
        "worker_hijack_root_logger": False,
        "broker_connection_timeout": 10,
    }


def make_app(settings: WorkerSettings | None = None, *, name: str = "evofleet") -> Celery:
    """A configured Celery app; the worker's one also registers the tasks."""
    settings = settings or WorkerSettings()
    app = Celery(name)
    app.config_from_object(celery_config(settings))
    app.conf.evofleet_settings = settings
    return app


app = make_app()
app.conf.imports = ("workers.tasks", "workers.presence", "workers.devices")
# A dead pool child is found in a fraction of a second, not at Celery's 5 s maintenance.
app.steps["worker"].add(LostChildReaper)
# A live worker's messages are not re-delivered, however long its candidates run.
app.steps["consumer"].add(KeepVisible)
