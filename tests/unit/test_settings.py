"""Settings come from EVOFLEET_* variables; a misspelled one is an error, not ignored."""

from __future__ import annotations

import pytest

from orchestration.settings import LaunchSettings
from workers.settings import WorkerSettings, check_environment


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVOFLEET_BROKER_URL", "rediss://:secret@redis.example:6380/2")
    monkeypatch.setenv("EVOFLEET_VISIBILITY_TIMEOUT_S", "900")
    settings = WorkerSettings()
    assert settings.broker_url == "rediss://:secret@redis.example:6380/2"
    assert settings.backend_url == settings.broker_url
    assert settings.visibility_timeout_s == 900
    assert LaunchSettings().broker_url == "rediss://:secret@redis.example:6380/2"


def test_misspelled_variable_is_rejected_with_a_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVOFLEET_BROKR_URL", "redis://x")
    with pytest.raises(ValueError, match="EVOFLEET_BROKR_URL \\(did you mean EVOFLEET_BROKER_URL\\?\\)"):
        LaunchSettings()
    with pytest.raises(ValueError, match="unknown evofleet setting"):
        check_environment({"EVOFLEET_NOPE": "1", "OTHER": "2"})


def test_bad_value_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVOFLEET_VISIBILITY_TIMEOUT_S", "-5")
    with pytest.raises(ValueError, match="visibility_timeout_s"):
        WorkerSettings()
