"""The launching side: CLI, submission, collection, sinks, summaries and local mode."""

from orchestration.api import attach, launch

__all__ = ["attach", "launch"]
