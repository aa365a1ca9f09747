"""A small GEPA task the workers import: an instruction must mention each example's keyword.

An instruction containing ``CRASH`` SIGKILLs the pool child evaluating it; an example marked
``explode`` raises in ``evaluate`` (for every candidate).
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable
from typing import Any

from gepa.core.adapter import EvaluationBatch

KEYWORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]
DATASET: list[dict[str, Any]] = [{"question": f"q{i}", "keyword": word} for i, word in enumerate(KEYWORDS)]


class KeywordAdapter:
    """Scores 1.0 when the candidate's instruction mentions the example's keyword."""

    def evaluate(
        self, batch: list[dict[str, Any]], candidate: dict[str, str], capture_traces: bool = False
    ) -> EvaluationBatch[dict[str, Any], str]:
        instruction = candidate["instruction"]
        if "CRASH" in instruction:
            os.kill(os.getpid(), signal.SIGKILL)
        outputs, scores, trajectories = [], [], []
        for example in batch:
            if example.get("explode"):
                raise ValueError(f"example {example['question']} explodes")
            hit = example["keyword"] in instruction
            outputs.append(f"{example['question']}: {instruction}")
            scores.append(1.0 if hit else 0.0)
            trajectories.append({"question": example["question"],
                                 "feedback": "ok" if hit else f"missing keyword: {example['keyword']}"})
        return EvaluationBatch(outputs=outputs, scores=scores,
                               trajectories=trajectories if capture_traces else None)

    def make_reflective_dataset(
        self, candidate: dict[str, str], eval_batch: EvaluationBatch[dict[str, Any], str],
        components_to_update: list[str],
    ) -> dict[str, list[dict[str, Any]]]:
        records = [
            {"Inputs": t["question"], "Generated Outputs": output, "Feedback": t["feedback"]}
            for output, t in zip(eval_batch.outputs, eval_batch.trajectories or [], strict=True)
        ]
        return {name: records for name in components_to_update}


adapter = KeywordAdapter()


def reflection_lm(first: str = "CRASH") -> Callable[[str], str]:
    """A deterministic reflection model: its first proposal is ``first``; then it proposes an
    instruction naming every keyword any feedback so far said was missing."""
    seen: set[str] = set()
    calls = [0]

    def lm(prompt: str) -> str:
        calls[0] += 1
        seen.update(re.findall(r"missing keyword: (\w+)", prompt))
        if calls[0] == 1 and first:
            return f"```\n{first} mention {' '.join(sorted(seen))}\n```"
        return f"```\nMention {' '.join(sorted(seen))}.\n```"

    return lm


def keyword_score(candidate: str, example: dict[str, Any]) -> tuple[float, dict[str, str]]:
    """optimize_anything's evaluator: 1.0 when the text names the example's keyword."""
    if "CRASH" in candidate:
        os.kill(os.getpid(), signal.SIGKILL)
    if example["keyword"] in candidate:
        return 1.0, {"feedback": "ok"}
    return 0.0, {"feedback": f"missing keyword: {example['keyword']}"}
