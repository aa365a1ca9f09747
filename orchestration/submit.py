"""Building and submitting a generation's chord, chunk by chunk, under backpressure.

The chord is assembled by hand so that it can be submitted lazily: its size is set to the
candidate count up front (an upper bound on the number of header tasks), header tasks are
published as room frees up (``max_in_flight``), and just before the last chunk is published the
chord's size is lowered to the real number of chunks. Until the last chunk is out, fewer parts
than that can have returned, so the body cannot fire early; the last part to return fires it.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

from celery import Celery

from workers.contract import Candidate, GenerationSpec, Priority
from workers.keys import EVALUATE_TASK, FINALIZE_TASK
from workers.ledger import Ledger

PRIORITY_ORDER = {p: i for i, p in enumerate(Priority)}
AUTO_TARGET_S = 0.2  # seconds of evaluation one message should carry under chunk_size=auto
AUTO_MAX_CHUNK = 512
AUTO_PROBE = 4  # results to see before auto sizing leaves chunks of one


def group_id_for(generation_id: str) -> str:
    return f"evofleet-{generation_id}"


def planned_order(candidates: list[Candidate]) -> list[Candidate]:
    """Highest priority first, the spec's order within a priority."""
    return sorted(candidates, key=lambda c: PRIORITY_ORDER[c.priority])


def create_generation(app: Celery, ledger: Ledger, spec: GenerationSpec) -> None:
    """Store the generation and set its chord's size to the candidate count (an upper bound)."""
    ordered = spec.model_copy(update={"candidates": planned_order(spec.candidates)})
    ledger.create(ordered, chunk_count=0)
    app.backend.set_chord_size(group_id_for(spec.id), len(spec.candidates))


@dataclass
class AutoChunk:
    """Picks a chunk size from the measured evaluation time per candidate."""

    seen: int = 0
    seconds: float = 0.0

    def observe(self, eval_seconds: float | None) -> None:
        if eval_seconds is not None:
            self.seen += 1
            self.seconds += eval_seconds

    def size(self, remaining: int) -> int:
        if self.seen < AUTO_PROBE:
            return 1
        mean = self.seconds / self.seen
        if mean >= 1.0:
            return 1
        wanted = math.ceil(AUTO_TARGET_S / max(mean, 1e-6))
        return max(1, min(wanted, AUTO_MAX_CHUNK, max(1, remaining // 8)))


class Submitter:
    """Publishes the generation's remaining chunks while fewer than ``max_in_flight`` are out."""

    def __init__(self, app: Celery, ledger: Ledger, spec_header: dict[str, Any]) -> None:
        self.app = app
        self.ledger = ledger
        self.generation_id = ledger.generation_id
        self.chunk_size = spec_header["chunk_size"]
        self.time_limit = float(spec_header["time_limit"])
        self.max_in_flight = int(spec_header["max_in_flight"])
        self.auto = AutoChunk()
        state = ledger.state()
        self.total = int(state["total"])
        self.submitted = int(state.get("submitted", 0))
        self.chunks = int(state.get("chunks", 0))
        self.body = app.signature(FINALIZE_TASK, args=(self.generation_id,), queue="critical")
        self.group_id = group_id_for(self.generation_id)
        self._buffer: list[Candidate] = []

    @property
    def done(self) -> bool:
        return self.submitted >= self.total

    def submit_more(self, recorded: int) -> int:
        """Publish chunks until the in-flight cap or the end; return candidates published."""
        published = 0
        if self.done or not self.ledger.is_open():
            return 0
        with self.app.producer_or_acquire() as producer:
            while not self.done:
                room = self.max_in_flight - (self.submitted - recorded)
                if room <= 0:
                    break
                chunk = self._next_chunk(min(room, self._chunk_limit()))
                self._publish(chunk, producer)
                published += len(chunk)
        return published

    def _chunk_limit(self) -> int:
        if self.chunk_size == "auto":
            return self.auto.size(self.total - self.submitted)
        return int(self.chunk_size)

    def _next_chunk(self, limit: int) -> list[Candidate]:
        """The next candidates, all of one priority, at most ``limit``."""
        start = self.submitted + len(self._buffer)
        if len(self._buffer) < limit and start < self.total:
            stop = min(self.total, start + max(limit, 1000)) - 1
            self._buffer.extend(self.ledger.candidates(start, stop))
        first = self._buffer[0].priority
        size = 1
        while size < min(limit, len(self._buffer)) and self._buffer[size].priority == first:
            size += 1
        chunk, self._buffer = self._buffer[:size], self._buffer[size:]
        return chunk

    def _publish(self, chunk: list[Candidate], producer: Any) -> None:
        index = self.chunks
        last = self.submitted + len(chunk) >= self.total
        if last:
            # Lower the chord's size from the candidate count to the real chunk count.
            surplus = self.total - (self.chunks + 1)
            if surplus and self.ledger.client.hsetnx(self.ledger.keys.state, "chord_trimmed", 1):
                key = self.app.backend.get_key_for_group(self.group_id, ".t")
                self.ledger.client.decrby(key, surplus)
        self.app.send_task(
            EVALUATE_TASK,
            args=(self.generation_id, [c.model_dump(mode="json") for c in chunk], time.time()),
            task_id=str(uuid.uuid4()),
            queue=chunk[0].priority.value,
            group_id=self.group_id,
            group_index=index,
            chord=self.body,
            time_limit=self.time_limit * len(chunk),
            producer=producer,
        )
        self.chunks += 1
        self.submitted += len(chunk)
        with self.ledger.client.pipeline(transaction=True) as pipe:
            pipe.hset(
                self.ledger.keys.state,
                mapping={"submitted": self.submitted, "chunks": self.chunks},
            )
            pipe.hincrby(self.ledger.keys.state, f"s_{chunk[0].priority.value}", len(chunk))
            pipe.execute()
