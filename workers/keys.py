"""Every Redis key name and Celery task name of the contract, in one place."""

from __future__ import annotations

from dataclasses import dataclass

from workers.contract import PRIORITIES

EVALUATE_TASK = "evofleet.evaluate"
FINALIZE_TASK = "evofleet.finalize_generation"
GENERATIONS_INDEX = "evofleet:generations"
WORKER_SLOTS = "evofleet:workers:{hostname}:slots"
# Zset of JSON [generation_id, store_url] -> first write time: where each generation's
# artifacts are, so they can be deleted once its keys have expired.
ARTIFACT_STORES = "evofleet:artifact-stores"
ARTIFACT_SWEEP_LOCK = "evofleet:artifact-sweep"  # one worker sweeps per interval
RUN_CHECKPOINT = "evofleet:run:{run_id}:checkpoint"  # JSON: an evolve run's progress, where its files are


@dataclass(frozen=True)
class GenerationKeys:
    """The Redis keys one generation owns; the hash tag keeps them in one cluster slot."""

    generation_id: str

    @property
    def prefix(self) -> str:
        return f"evofleet:{{{self.generation_id}}}"

    @property
    def header(self) -> str:
        """JSON: the spec without candidates (evaluator, objectives, limits)."""
        return f"{self.prefix}:header"

    def candidates(self, priority: str) -> str:
        """List of one priority's candidate JSON documents, in the spec's order."""
        return f"{self.prefix}:candidates:{priority}"

    @property
    def state(self) -> str:
        """Hash: status, total, submitted, recorded, n_<status>, timestamps."""
        return f"{self.prefix}:state"

    @property
    def results(self) -> str:
        """Hash: candidate id -> EvaluationResult JSON; the first write wins."""
        return f"{self.prefix}:results"

    @property
    def stream(self) -> str:
        """Stream of newly recorded results, read by the collector in batches."""
        return f"{self.prefix}:stream"

    @property
    def attempts(self) -> str:
        """Hash: candidate id -> evaluations started."""
        return f"{self.prefix}:attempts"

    @property
    def collector(self) -> str:
        """String with a short TTL of its own (so not in ``all``): the one launcher that collects."""
        return f"{self.prefix}:collector"

    @property
    def summary(self) -> str:
        """JSON: the generation's summary, written when it ends."""
        return f"{self.prefix}:summary"

    @property
    def attached(self) -> str:
        """Hash: candidate id -> outputs/feedback its evaluator attached so far (JSON), for a
        result recorded by the worker's main process after the pool child died."""
        return f"{self.prefix}:attached"

    def all(self) -> list[str]:
        """Every key of the generation, for expiry and deletion."""
        return [
            self.header,
            *(self.candidates(priority) for priority in PRIORITIES),
            self.state,
            self.results,
            self.stream,
            self.attempts,
            self.summary,
            self.attached,
        ]
