"""Worker-side settings, read from ``EVOFLEET_*`` environment variables."""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from typing import Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "EVOFLEET_"
# Every EVOFLEET_* variable either side reads; a misspelled one is an error, not silently dropped.
KNOWN_ENV = frozenset(
    {
        "BROKER_URL", "RESULT_BACKEND", "VISIBILITY_TIMEOUT_S", "RETENTION_S",
        "MAX_TASKS_PER_CHILD", "MAX_MEMORY_PER_CHILD_MB", "METRICS_PORT", "TASK_EVENTS",  # workers
        "LOCAL_WORKERS", "LOCAL_CONCURRENCY", "REDIS_SERVER",  # launcher
        "GPUS", "TORCH_THREADS", "GPU_MEMORY_FRACTION",  # set by `evofleet worker` for its pool children
        "INLINE_OUTPUT_BYTES", "ARTIFACT_STORE", "ARTIFACT_STORE_OPTIONS", "ARTIFACT_SWEEP_S",
    }
)


def check_environment(environ: Mapping[str, str] | None = None) -> None:
    """Raise ValueError naming any ``EVOFLEET_*`` variable that no setting reads."""
    environ = os.environ if environ is None else environ
    unknown = sorted(
        name for name in environ
        if name.upper().startswith(ENV_PREFIX) and name.upper()[len(ENV_PREFIX):] not in KNOWN_ENV
    )
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name.upper()[len(ENV_PREFIX):], KNOWN_ENV, n=1)
            hints.append(f"{name}" + (f" (did you mean {ENV_PREFIX}{close[0]}?)" if close else ""))
        raise ValueError("unknown evofleet setting(s) in the environment: " + ", ".join(hints))


class StrictEnvSettings(BaseSettings):
    """Settings that refuse unknown ``EVOFLEET_*`` environment variables."""

    @model_validator(mode="after")
    def _no_unknown_environment(self) -> StrictEnvSettings:
        check_environment()
        return self


class WorkerSettings(StrictEnvSettings):
    """How a worker reaches Redis and how it guards against lost messages and leaks."""

    model_config = SettingsConfigDict(env_prefix="EVOFLEET_", extra="ignore")

    broker_url: str = Field(
        "redis://localhost:6379/0",
        description="Redis broker URL: redis://[:password@]host:port/db, or rediss:// for TLS.",
    )
    result_backend: str | None = Field(
        None, description="Result backend URL; the broker URL when unset."
    )
    visibility_timeout_s: int = Field(
        3600,
        gt=0,
        description="Seconds before a lost worker's unacknowledged messages are re-delivered. "
        "A consuming worker keeps its own from coming back, however long they run; keep it "
        "above the longest warm shutdown.",
    )
    retention_s: int = Field(
        7 * 24 * 3600, gt=0, description="Seconds a finished generation's keys are kept."
    )
    max_tasks_per_child: int | None = Field(
        None, gt=0, description="Recycle a pool child after this many tasks."
    )
    max_memory_per_child_mb: int | None = Field(
        None, gt=0, description="Recycle a pool child whose resident memory passes this."
    )

    task_events: bool = Field(
        True,
        description="Send Celery task events (what Flower shows; Flower also switches them on "
        "itself every 5 s). Local mode turns them off: no Flower watches its private Redis.",
    )

    metrics_port: int = Field(
        0, ge=0, le=65535,
        description="Port of the worker's Prometheus /metrics (all interfaces); 0: no metrics.",
    )

    inline_output_bytes: int = Field(
        64 * 1024,
        ge=256,
        description="Bytes of outputs + feedback a result keeps inline in Redis; above it they "
        "are stored as artifact outputs.json (and feedback.txt).",
    )
    artifact_store: str | None = Field(
        None,
        description="fsspec URL where artifacts are written (file:///shared/dir, "
        "s3://bucket/prefix) when the spec names none.",
    )
    artifact_store_options: dict[str, Any] = Field(
        default_factory=dict,
        description="JSON object of fsspec storage options for the store, e.g. "
        '{"endpoint_url": "http://minio:9000"} for s3://.',
    )
    artifact_sweep_s: int = Field(
        3600,
        gt=0,
        description="Seconds between a worker's sweeps that delete the artifacts of generations "
        "whose Redis keys expired.",
    )

    @field_validator("artifact_store")
    @classmethod
    def _store_url(cls, value: str | None) -> str | None:
        from workers.artifacts import as_store_url

        return None if not value else as_store_url(value)

    @property
    def backend_url(self) -> str:
        """The result backend, defaulting to the broker."""
        return self.result_backend or self.broker_url
