"""The launching side: CLI, submission, collection, sinks, summaries and local mode."""

from __future__ import annotations

from typing import Any

__all__ = ["attach", "launch", "load_artifact", "load_feedback", "load_outputs"]


def __getattr__(name: str) -> Any:
    # Lazy, so that `evofleet` can report bad EVOFLEET_* settings, which importing the API reads.
    if name in __all__:
        from orchestration import api

        return getattr(api, name)
    raise AttributeError(f"module 'orchestration' has no attribute {name!r}")
