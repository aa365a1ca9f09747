"""Building and submitting a generation's chord, chunk by chunk, under backpressure.

The chord is assembled by hand so that it can be submitted lazily: its size is set to the
candidate count up front (an upper bound on the number of header tasks), header tasks are
published as room frees up (``max_in_flight``), and just before the last chunk is published the
chord's size is lowered to the real number of chunks. Until the last chunk is out, fewer parts
than that can have returned, so the body cannot fire early; the last part to return fires it.

Header tasks are ordinary Celery messages (what ``send_task`` would publish, minus the optional
``task-sent`` event), built here and LPUSHed many at a time through one Redis pipeline, together
with the state counters and the chord trim, in one MULTI when broker and backend are one Redis.
"""

from __future__ import annotations

import base64
import itertools
import json
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery
from pydantic_core import to_json
from redis.client import Pipeline

from workers.contract import PRIORITIES, Candidate, EvaluationResult, GenerationSpec
from workers.keys import EVALUATE_TASK, FINALIZE_TASK
from workers.ledger import Ledger
from workers.recent import RecentMap
from workers.redis_client import client_for

AUTO_TARGET_S = 1.0  # seconds of evaluation one message carries under chunk_size=auto (a critical
# arrival waits at most about this long for a busy pool child)
AUTO_MAX_CHUNK = 512
AUTO_PROBE = 4  # results to see before auto sizing leaves chunks of one
# A message costs the worker ~5 ms of its own (bench figure 3), a candidate in a chunk ~0.5 ms
# besides its evaluation (ledger round trips, validation): splitting the tail into messages
# of less than ~25 ms of work buys no parallelism, only that cost again per message.
AUTO_MIN_MESSAGE_S = 0.025
CANDIDATE_COST_S = 0.0005
PIPELINE_MESSAGES = 500  # messages per Redis round trip
PRIME_CANDIDATES = 1000  # candidates a launch hands its submitter from memory
LEARNED_EVALUATORS = 256  # (deployment, evaluator) pairs whose cost a launcher remembers


def group_id_for(generation_id: str) -> str:
    return f"evofleet-{generation_id}"


def create_generation(
    app: Celery,
    ledger: Ledger,
    spec: GenerationSpec,
    candidates: Iterable[Candidate | dict[str, Any]] | None = None,
    *,
    collector: str | None = None,
    lease_s: float = 0.0,
) -> int:
    """Store the generation (candidates streamed, one Redis list per priority) and set its
    chord's size to the candidate count, an upper bound on its header tasks; return the count.
    ``collector`` takes the collector lease in the same step (see ``Ledger.create``).

    The chord's size is set as Celery's Redis backend ``set_chord_size`` sets it, in the step
    that stores the generation's state: the ledger lives on the result backend's Redis.
    """
    backend = app.backend  # its key names and expiry only: its own client is never used
    group_id = group_id_for(spec.id)

    def set_chord_size(pipe: Pipeline, total: int) -> None:
        pipe.delete(backend.get_key_for_group(group_id, ".c"))  # a finished run's marker
        pipe.set(backend.get_key_for_group(group_id, ".s"), total,
                 ex=backend.chord_expires or None)

    return ledger.create(spec, candidates, also=set_chord_size, collector=collector, lease_s=lease_s)


@dataclass
class AutoChunk:
    """Picks a chunk size from the measured evaluation time per candidate."""

    seen: int = 0
    seconds: float = 0.0

    def observe(self, results: Iterable[EvaluationResult]) -> None:
        """Learn from results. A batch evaluator's results share their worker and start, and
        each one's ``eval_seconds`` is the whole call's: the call's time is split among them."""
        calls: dict[tuple[str | None, Any], list[float]] = {}
        for result in results:
            if result.eval_seconds is not None:
                calls.setdefault((result.worker, result.started_at), []).append(result.eval_seconds)
        for seconds in calls.values():
            self.seen += len(seconds)
            self.seconds += max(seconds)

    @property
    def probing(self) -> bool:
        return self.seen < AUTO_PROBE

    def size(self, remaining: int) -> int:
        if self.probing:
            return 1
        mean = self.seconds / self.seen
        if mean >= 1.0:
            return 1
        wanted = math.ceil(AUTO_TARGET_S / max(mean, 1e-6))
        # An eighth of what remains leaves work for every worker, down to a useful message.
        useful = math.ceil(AUTO_MIN_MESSAGE_S / (mean + CANDIDATE_COST_S))
        share = max(remaining // 8, min(useful, remaining))
        size = max(1, min(wanted, AUTO_MAX_CHUNK, share))
        # A tail of less than half a message goes with this one: a message of its own would
        # cost its worker as much and wait for a free pool child besides.
        if remaining - size < size / 2 and remaining <= min(wanted * 3 // 2, AUTO_MAX_CHUNK):
            return remaining
        return size


class LearnedCost:
    """What this process measured per (deployment, evaluator): an optimizer's next generation
    sizes its chunks from it at once instead of probing again with chunks of one.

    A new generation starts from the last mean as if it had seen AUTO_PROBE results at that
    cost, so its own results soon outweigh it when the cost changes.
    """

    def __init__(self) -> None:
        self._means: RecentMap[tuple[str, str], float] = RecentMap(LEARNED_EVALUATORS)
        self._lock = threading.Lock()

    def start(self, key: tuple[str, str]) -> AutoChunk:
        with self._lock:
            mean = self._means.get(key)
        return AutoChunk() if mean is None else AutoChunk(seen=AUTO_PROBE, seconds=mean * AUTO_PROBE)

    def remember(self, key: tuple[str, str], auto: AutoChunk) -> None:
        if auto.probing:
            return
        with self._lock:
            self._means.put(key, auto.seconds / auto.seen)


LEARNED = LearnedCost()


class TaskMessages:
    """Builds the Redis payload of an ordinary Celery (protocol 2) task message, as kombu would.

    The worker cannot tell it from one ``send_task`` published: same headers, properties and
    base64 JSON body, pushed onto the list kombu's Redis transport reads for the queue.
    """

    def __init__(self, app: Celery, body: dict[str, Any], group_id: str) -> None:
        self.chord = dict(body)
        self.group_id = group_id
        self.origin = f"{os.getpid()}@{socket.gethostname()}"
        self.reply_to = str(app.thread_oid)
        options = app.conf.broker_transport_options or {}
        self.key_prefix = str(options.get("global_keyprefix", ""))
        # The hash kombu records a delivered, not yet acknowledged message in.
        self.unacked_key = f"{self.key_prefix}{options.get('unacked_key', 'unacked')}"

    def queue_key(self, queue: str) -> str:
        """The list kombu's Redis transport uses for ``queue`` at priority 0."""
        return f"{self.key_prefix}{queue}"

    def build(
        self, args: list[Any], queue: str, group_index: int | None, time_limit: float,
        *, chord: bool = True,
    ) -> str:
        """A message for ``args``; with ``chord=False`` it is no part of the generation's chord
        (a republished candidate: the chord's count must not change)."""
        task_id = str(uuid.uuid4())
        callbacks = {"callbacks": None, "errbacks": None, "chain": None,
                     "chord": self.chord if chord else None}
        # pydantic's serializer takes the Candidate models as they are, ~7x json.dumps.
        body = to_json([args, {}, callbacks])
        headers: dict[str, Any] = {
            "lang": "py", "task": EVALUATE_TASK, "id": task_id, "shadow": None, "eta": None,
            "expires": None, "group": self.group_id if chord else None,
            "group_index": group_index if chord else None, "retries": 0,
            "timelimit": [time_limit, None], "root_id": task_id, "parent_id": None,
            "argsrepr": f"({args[0]!r}, <{len(args[1])} candidates>, {args[2]!r})",
            "kwargsrepr": "{}", "origin": self.origin, "ignore_result": None,
            "replaced_task_nesting": 0, "stamped_headers": None, "stamps": {},
        }
        properties = {
            "correlation_id": task_id, "reply_to": self.reply_to, "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue}, "priority": 0,
            "body_encoding": "base64", "delivery_tag": str(uuid.uuid4()),
        }
        return json.dumps({
            "body": base64.b64encode(body).decode(), "content-encoding": "utf-8",
            "content-type": "application/json", "headers": headers, "properties": properties,
        })


class Submitter:
    """Publishes the generation's remaining chunks while fewer than ``max_in_flight`` are out."""

    def __init__(
        self,
        app: Celery,
        ledger: Ledger,
        spec_header: dict[str, Any],
        state: dict[str, str] | None = None,
    ) -> None:
        """``state``: the generation's state, when the caller has just read it."""
        self.app = app
        self.ledger = ledger
        self.generation_id = ledger.generation_id
        self.chunk_size = spec_header["chunk_size"]
        self.time_limit = float(spec_header["time_limit"])
        self.max_in_flight = int(spec_header["max_in_flight"])
        self.learned_key = (str(app.conf.broker_url), str(spec_header["evaluator"]))
        self.auto = LEARNED.start(self.learned_key)
        self.state = state = state or ledger.state()  # as it was when this submitter started
        self.total = int(state["total"])
        self.submitted = int(state.get("submitted", 0))
        self.chunks = int(state.get("chunks", 0))
        # Per priority: how many there are, and the position of the next one to publish.
        self.totals = {p: int(state.get(f"t_{p}", 0)) for p in PRIORITIES}
        self.cursor = {p: int(state.get(f"s_{p}", 0)) for p in PRIORITIES}
        body = app.signature(FINALIZE_TASK, args=(self.generation_id,), queue="critical")
        self.group_id = group_id_for(self.generation_id)
        # Named once: the chord's size key, lowered just before its last part is published.
        self.chord_trim_key = app.backend.get_key_for_group(self.group_id, ".t")
        self.messages = TaskMessages(app, body, self.group_id)
        self.broker = self._broker_client()
        self._buffer: list[Candidate] = []  # fetched, not yet chunked, of _buffer_priority
        self._buffer_priority: str | None = None
        self._probes: dict[str, bool] = {}  # probe candidate id -> its result learned yet
        self._probing = self.chunk_size == "auto" and self.auto.probing

    def observe(self, results: Sequence[EvaluationResult]) -> None:
        """Learn the evaluator's cost from collected results, for this generation's chunks and
        (through LEARNED) for the next generation of the same evaluator on this deployment."""
        self._learn(results)
        LEARNED.remember(self.learned_key, self.auto)

    def _learn(self, results: Iterable[EvaluationResult]) -> None:
        """AutoChunk.observe, each probe result once: the probe reads its results back itself,
        and the collector hands them on too."""
        if self._probes:  # none when the cost was learned before: nothing to check
            fresh = []
            for result in results:
                learned = self._probes.get(result.candidate_id)
                if learned:
                    continue
                if learned is not None:
                    self._probes[result.candidate_id] = True
                fresh.append(result)
            results = fresh
        self.auto.observe(results)

    def _broker_client(self) -> redis.Redis:
        """The ledger's client when broker and backend are one Redis, else the broker's own."""
        broker_url = str(self.app.conf.broker_url)
        backend_url = str(self.app.conf.result_backend or broker_url)
        # A broker of its own: this process's one client for it, not a new one per generation.
        return self.ledger.client if broker_url == backend_url else client_for(broker_url)

    def prime(self, candidates: Sequence[Candidate]) -> None:
        """Hand over the population just stored, in its order, so that the first chunks need
        no read back from Redis; ignored once anything was published."""
        if self.submitted or self._buffer:
            return
        priority = next((p for p in PRIORITIES if self.totals[p]), None)
        if priority is not None:
            first = (c for c in candidates if c.priority.value == priority)
            self._buffer = list(itertools.islice(first, PRIME_CANDIDATES))
            self._buffer_priority = priority

    @property
    def done(self) -> bool:
        return self.submitted >= self.total

    def submit_more(self, recorded: int) -> int:
        """Publish chunks until the in-flight cap or the end; return candidates published."""
        if self.done:
            return 0
        published = 0
        while not self.done:
            room = self.max_in_flight - (self.submitted - recorded)
            probe_room = self._probe_room()
            if probe_room is not None:
                room = min(room, probe_room)
            chunks: list[list[Candidate]] = []
            queued = self.submitted
            while room > 0 and queued < self.total and len(chunks) < PIPELINE_MESSAGES:
                limit = self._chunk_limit(queued)
                if room < min(limit, self.total - queued) and queued > recorded:
                    # Wait for room for a whole chunk: backpressure must not shred chunks.
                    break
                chunk = self._next_chunk(min(room, limit))
                chunks.append(chunk)
                room -= len(chunk)
                queued += len(chunk)
            if not chunks:
                break
            try:
                self._publish(chunks)
            except BaseException:
                # Nothing of it was committed (one MULTI): take the same candidates next time.
                self._buffer, self._buffer_priority = [], None
                self.cursor = self._published_cursor()
                raise
            published += queued - self.submitted
            self.submitted = queued
            self.chunks += len(chunks)
            if self._probing:
                self._probes.update((c.id, False) for chunk in chunks for c in chunk)
        return published

    def _probe_room(self) -> int | None:
        """While auto sizing probes, only AUTO_PROBE candidates go out; None once it is done."""
        if not self._probing:
            return None
        if len(self._probes) < AUTO_PROBE:
            return AUTO_PROBE - len(self._probes)
        raw = self.ledger.client.hmget(self.ledger.keys.results, list(self._probes))
        if any(item is None for item in raw):
            return 0
        self._learn(EvaluationResult.model_validate_json(item) for item in raw if item is not None)
        self._probing = False
        return None

    def _chunk_limit(self, queued: int) -> int:
        if self.chunk_size == "auto":
            return self.auto.size(self.total - queued)
        return int(self.chunk_size)

    def _next_chunk(self, limit: int) -> list[Candidate]:
        """The next candidates of the highest priority with any left: at most ``limit``."""
        priority = next(p for p in PRIORITIES if self.cursor[p] < self.totals[p])
        if self._buffer_priority != priority:
            self._buffer, self._buffer_priority = [], priority
        start = self.cursor[priority] + len(self._buffer)
        if len(self._buffer) < limit and start < self.totals[priority]:
            stop = min(self.totals[priority], start + max(limit, 1000)) - 1
            self._buffer.extend(self.ledger.candidates(priority, start, stop))
        chunk, self._buffer = self._buffer[:limit], self._buffer[limit:]
        self.cursor[priority] += len(chunk)
        return chunk

    def _published_cursor(self) -> dict[str, int]:
        state = self.ledger.state()
        return {p: int(state.get(f"s_{p}", 0)) for p in PRIORITIES}

    def _publish(self, chunks: list[list[Candidate]]) -> None:
        """LPUSH the chunks' messages, trim the chord before its last part, count, in one go."""
        keys = self.ledger.keys
        same_redis = self.broker is self.ledger.client
        last = self.submitted + sum(len(c) for c in chunks) >= self.total
        state = self.ledger.client.pipeline(transaction=True)
        if last:
            # Lower the chord's size from the candidate count to the real chunk count, before
            # the last part can return (same MULTI, or a step ahead when Redis is split).
            surplus = self.total - (self.chunks + len(chunks))
            if surplus:
                state.eval(_TRIM_SCRIPT, 2, keys.state, self.chord_trim_key, surplus)
                if not same_redis:
                    state.execute()
        pipe = state if same_redis else self.broker.pipeline(transaction=False)
        per_priority: dict[str, int] = {}
        now = time.time()
        index = self.chunks
        for chunk in chunks:
            priority = chunk[0].priority.value
            args = [self.generation_id, chunk, now]
            time_limit = self.time_limit * len(chunk)
            pipe.lpush(self.messages.queue_key(priority),
                       self.messages.build(args, priority, index, time_limit))
            per_priority[priority] = per_priority.get(priority, 0) + len(chunk)
            index += 1
        if not same_redis:
            pipe.execute()
        submitted = self.submitted + sum(per_priority.values())
        state.hset(keys.state, mapping={"submitted": submitted, "chunks": index})
        for priority, count in per_priority.items():
            state.hincrby(keys.state, f"s_{priority}", count)
        state.execute()


# Trims the chord once, even if the launcher re-attaches and publishes the last chunk again.
_TRIM_SCRIPT = """
if redis.call('HSETNX', KEYS[1], 'chord_trimmed', 1) == 1 then
  redis.call('DECRBY', KEYS[2], ARGV[1])
end
return 0
"""
