"""Worker-side settings, read from ``EVOFLEET_*`` environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class WorkerSettings(BaseSettings):
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
        description="Seconds before an unacknowledged message is re-delivered; keep it above "
        "the longest hard time limit plus queueing slack.",
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

    @property
    def backend_url(self) -> str:
        """The result backend, defaulting to the broker."""
        return self.result_backend or self.broker_url
