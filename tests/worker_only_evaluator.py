"""An evaluator whose module needs a package only the workers have (torch on a GPU node, say)."""

from __future__ import annotations

import evofleet_worker_only_package  # type: ignore[import-not-found]  # noqa: F401


def evaluate(candidate: object, context: object) -> dict[str, float]:
    return {"f": 0.0}
