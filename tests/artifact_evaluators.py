"""Evaluators that return outputs, feedback and artifacts, named as ``tests.artifact_evaluators:NAME``."""

from __future__ import annotations

import hashlib
import os
import signal
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from workers.contract import Candidate
from workers.evaluators import Evaluation, EvaluationContext, EvaluationError


def gepa_like(candidate: Candidate, context: EvaluationContext) -> dict[str, Any]:
    """Scores a prompt on a few examples, GEPA style: per-example outputs, scores and feedback.

    Returned as a mapping with ``scores``/``outputs``/``feedback`` keys.
    """
    prompt = candidate.params["prompt"]
    per_example = []
    for question in candidate.params["examples"]:
        answer = f"{prompt} -> {question[::-1]}"
        per_example.append({"input": question, "output": answer, "score": len(question) % 3 / 2})
    accuracy = sum(item["score"] for item in per_example) / len(per_example)
    feedback = "\n".join(
        f"example {i}: {'ok' if item['score'] else 'wrong: expected a palindrome'} ({item['input']!r})"
        for i, item in enumerate(per_example)
    )
    return {
        "scores": {"accuracy": accuracy},
        "outputs": {"per_example": per_example, "trace": ["parse", "answer", {"tokens": 17}],
                    "unicode": "héllo ✓"},
        "feedback": feedback,
    }


class BatchGepa:
    """The same through ``evaluate_batch``, returning Evaluation objects."""

    def __call__(self, candidate: Candidate, context: EvaluationContext) -> Evaluation:
        return self.evaluate_batch([candidate], context)[0]

    def evaluate_batch(
        self, candidates: Sequence[Candidate], context: EvaluationContext
    ) -> list[Evaluation]:
        out = []
        for candidate in candidates:
            data = gepa_like(candidate, context)
            out.append(Evaluation(scores=data["scores"], outputs=data["outputs"],
                                  feedback=data["feedback"] + " (batch)"))
        return out


batch_gepa = BatchGepa()


def raises_with_outputs(candidate: Candidate, context: EvaluationContext) -> float:
    """Attaches a trace, then fails with partial outputs (or times out after attaching)."""
    context.attach(outputs={"trace": ["started", "step 1"]}, feedback="got as far as step 1")
    mode = candidate.params.get("mode", "raise")
    if mode == "sleep":
        time.sleep(30)
    if mode == "plain":
        error = RuntimeError("plain exception with attributes")
        error.evofleet_outputs = {"partial": [1, 2]}  # type: ignore[attr-defined]
        raise error
    raise EvaluationError("step 2 diverged", outputs={"trace": ["started", "step 1", "step 2"]},
                          artifacts={"log.txt": "step 2: loss = nan\n"})


def big_outputs(candidate: Candidate, context: EvaluationContext) -> Evaluation:
    """Outputs of ``params.bytes`` characters (and feedback of ``params.feedback_bytes``, and
    ``params.extra_scores`` scores besides the objective)."""
    size = int(candidate.params["bytes"])
    feedback_size = int(candidate.params.get("feedback_bytes", 0))
    extra = {f"example_{i}": 1.0 for i in range(int(candidate.params.get("extra_scores", 0)))}
    return Evaluation(
        scores={"f": float(size), **extra},
        outputs={"text": "x" * size},
        feedback=("y" * feedback_size) if feedback_size else "short",
    )


def tensor_and_file(candidate: Candidate, context: EvaluationContext) -> Evaluation:
    """A tensor of ``params.mb`` MB, a dict of tensors, a numpy array, bytes, text and a file."""
    import numpy as np
    import torch

    count = int(float(candidate.params.get("mb", 1)) * 1024 * 1024) // 4
    seed = int(candidate.params.get("seed", 0))
    weights = torch.arange(count, dtype=torch.float32) + seed
    folder = Path(tempfile.mkdtemp(prefix="evofleet-test-"))
    log = folder / "run.log"
    log.write_text("".join(f"step {i} loss {1 / (i + 1):.6f}\n" for i in range(2000)))
    artifacts: dict[str, Any] = {
        "weights": weights,
        "state": {"w": torch.ones(3, 4, dtype=torch.float16), "b": torch.tensor([seed])},
        "array": np.linspace(0, 1, 11),
        "raw": bytes(range(256)),
        "log": log,
    }
    return Evaluation(
        scores={"f": float(seed)},
        outputs={"log_sha256": hashlib.sha256(log.read_bytes()).hexdigest()},
        artifacts=artifacts,
    )


def one_tensor(candidate: Candidate, context: EvaluationContext) -> Evaluation:
    """A 1 MB float32 tensor artifact (the benchmark's candidate)."""
    import torch

    mb = float(candidate.params.get("mb", 1))
    return Evaluation(scores={"f": 1.0},
                      artifacts={"weights": torch.full((int(mb * 262144),), 0.5)})


def sized_outputs(candidate: Candidate, context: EvaluationContext) -> Evaluation:
    """Outputs whose compact JSON is exactly ``params.bytes`` bytes (the benchmark's candidate)."""
    size = int(candidate.params["bytes"])
    return Evaluation(scores={"f": 1.0}, outputs="z" * (size - 2))  # the two quotes count


def attach_then_die(candidate: Candidate, context: EvaluationContext) -> float:
    """Attaches a trace, then its pool child dies (``kill``) or ignores the soft limit (``hang``)."""
    context.attach(outputs={"trace": ["loaded", candidate.id]}, feedback="died after loading")
    if candidate.params.get("mode") == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    signal.signal(signal.SIGALRM, signal.SIG_IGN)  # blocked in C code: only the hard limit ends it
    time.sleep(60)
    return 0.0
