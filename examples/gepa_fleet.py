"""GEPA on the fleet: ``gepa.optimize(..., adapter=FleetAdapter("package.module:adapter"))``.

Run from the repository root: ``python -m examples.gepa_fleet`` (local mode; set
EVOFLEET_BROKER_URL to use a deployment). The workers import your adapter by its path and
run its ``evaluate`` on one example each; reflection runs here. The reflection model below is
a deterministic stand-in for an LLM (no network): pass your own ``reflection_lm``.
"""

from __future__ import annotations

import re
from typing import Any

import gepa
from gepa.core.adapter import EvaluationBatch

from orchestration.integrations.gepa import FleetAdapter

FACTS = ["redis", "celery", "workers", "chord", "ledger"]
DATASET = [{"question": f"What does evofleet use for {word}?", "needs": word} for word in FACTS]


class GlossaryAdapter:
    """Scores 1.0 when the candidate's system prompt mentions the fact an example needs."""

    def evaluate(self, batch: list[dict[str, Any]], candidate: dict[str, str],
                 capture_traces: bool = False) -> EvaluationBatch[dict[str, str], str]:
        prompt = candidate["system_prompt"]
        scores = [1.0 if example["needs"] in prompt else 0.0 for example in batch]
        traces = [{"question": example["question"],
                   "feedback": "correct" if score else f"the answer needs '{example['needs']}'"}
                  for example, score in zip(batch, scores, strict=True)]
        return EvaluationBatch(outputs=[prompt] * len(batch), scores=scores,
                               trajectories=traces if capture_traces else None)

    def make_reflective_dataset(self, candidate: dict[str, str],
                                eval_batch: EvaluationBatch[dict[str, str], str],
                                components_to_update: list[str]) -> dict[str, list[dict[str, Any]]]:
        records = [{"Inputs": t["question"], "Generated Outputs": out, "Feedback": t["feedback"]}
                   for out, t in zip(eval_batch.outputs, eval_batch.trajectories or [], strict=True)]
        return {name: records for name in components_to_update}


adapter = GlossaryAdapter()


def toy_reflection_lm(prompt: str | list[dict[str, Any]]) -> str:
    """Proposes a prompt naming every fact the feedback says is missing, plus the ones kept."""
    prompt = str(prompt)
    words = set(re.findall(r"needs '(\w+)'", prompt)) | {w for w in FACTS if f" {w}" in prompt}
    return "```\nYou know about " + ", ".join(sorted(words)) + ".\n```"


def main() -> None:
    with FleetAdapter("examples.gepa_fleet:adapter") as fleet_adapter:
        result = gepa.optimize(
            seed_candidate={"system_prompt": "You are helpful."}, trainset=DATASET,
            valset=DATASET, adapter=fleet_adapter, reflection_lm=toy_reflection_lm,
            reflection_minibatch_size=2, max_metric_calls=30, seed=0,
        )
    best = result.best_idx
    print(f"best score {result.val_aggregate_scores[best]:.2f}: {result.candidates[best]}")


if __name__ == "__main__":
    main()
