"""The ledger: a generation's results in Redis, where the first result per candidate wins."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from pydantic_core import to_json
from redis.client import Pipeline
from redis.typing import EncodableT, FieldT

from workers import metrics
from workers.contract import (
    PRIORITIES,
    Candidate,
    EvaluationResult,
    GenerationHeader,
    GenerationSpec,
    Status,
    candidate_echo,
    from_timestamp,
    utc_now,
)
from workers.keys import GENERATIONS_INDEX, GenerationKeys

# One atomic step for a list of results (ARGV: 5 per result): only the first result for a
# candidate is stored, streamed and counted; one flag per result says whether it was. A
# generation whose state is gone (deleted, expired) records nothing: no keys without expiry.
# A large result is streamed by candidate id ('c'), so Redis holds its JSON once; what its
# evaluator attached on the way is dropped (the result has it).
_RECORD_SCRIPT = """
local flags = {}
local open = redis.call('EXISTS', KEYS[3]) == 1
for i = 1, #ARGV, 5 do
  local id = ARGV[i]
  if open and redis.call('HSETNX', KEYS[1], id, ARGV[i + 1]) == 1 then
    if ARGV[i + 4] == 'r' then
      redis.call('XADD', KEYS[2], '*', 'r', ARGV[i + 1])
    else
      redis.call('XADD', KEYS[2], '*', 'c', id)
    end
    redis.call('HINCRBY', KEYS[3], 'recorded', 1)
    redis.call('HINCRBY', KEYS[3], 'n_' .. ARGV[i + 2], 1)
    redis.call('HINCRBY', KEYS[3], 'r_' .. ARGV[i + 3], 1)
    redis.call('HDEL', KEYS[4], id)
    flags[#flags + 1] = 1
  else
    flags[#flags + 1] = 0
  end
end
return flags
"""

# Moves a running generation to an end state once; a later caller sees the first one.
_CLOSE_SCRIPT = """
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'running' or status == false then
  redis.call('HSET', KEYS[1], 'status', ARGV[1], 'finished_at', ARGV[2])
  return ARGV[1]
end
return status
"""

# Completes a running generation with its summary, in one step with what goes with its end:
# the lease's release (ARGV[3]: the holder's token, '' for none) and (ARGV[4] > 0) the expiry of
# its keys (KEYS[5..]) and of the index's older entries (KEYS[4]). Returns the end state, and the
# summary of whoever ended it first when that was not this call (its own is not sent back).
_COMPLETE_SCRIPT = """
if ARGV[3] ~= '' and redis.call('GET', KEYS[3]) == ARGV[3] then
  redis.call('DEL', KEYS[3])
end
local status = redis.call('HGET', KEYS[1], 'status')
local ours = status == 'running'
if ours then
  redis.call('SET', KEYS[2], ARGV[1])
  redis.call('HSET', KEYS[1], 'status', 'complete', 'finished_at', ARGV[2])
  status = 'complete'
end
if tonumber(ARGV[4]) > 0 then
  for i = 5, #KEYS do
    redis.call('EXPIRE', KEYS[i], ARGV[4])
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. ARGV[5])
end
if ours then
  return {status}
end
return {status, redis.call('GET', KEYS[2])}
"""

# Takes or renews the collector lease when it is free or already ours.
_CLAIM_SCRIPT = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

# The claim above, and the generation's status (KEYS[2]) in the same step: {held, status}.
_RENEW_SCRIPT = """
local held = 0
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  held = 1
end
return {held, redis.call('HGET', KEYS[2], 'status')}
"""

# Drops the lease only if it is still ours.
_RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# What a task needs before it evaluates, in one round trip: is the generation open, which of
# its candidates already have a result, (for a lone candidate) count the attempt now, and (when
# ARGV[2] is 1) the generation's header, '' if it has none.
# A deleted or expired generation (no state) is closed: its queued messages are skipped.
_BEGIN_SCRIPT = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'running' then
  return {0}
end
local header = ''
if ARGV[2] == '1' then
  header = redis.call('GET', KEYS[4]) or ''
end
local out = {1, header}
for i = 3, #ARGV do
  local done = redis.call('HEXISTS', KEYS[2], ARGV[i])
  local attempt = 0
  if done == 0 and ARGV[1] == '1' then
    attempt = redis.call('HINCRBY', KEYS[3], ARGV[i], 1)
  end
  out[#out + 1] = done
  out[#out + 1] = attempt
end
return out
"""

RUNNING = "running"
STREAM_INLINE_BYTES = 4096  # results up to this size travel whole in the stream
END_STATES = ("complete", "partial", "cancelled")


@dataclass
class TaskStart:
    """What ``Ledger.begin`` found: candidates already recorded, attempts counted now."""

    recorded: set[str] = field(default_factory=set)
    attempts: dict[str, int] = field(default_factory=dict)
    header: GenerationHeader | None = None  # when asked for


class GenerationNotFound(LookupError):
    """No generation with that id is in Redis (never launched, or expired)."""


class Ledger:
    """Reads and writes one generation's keys."""

    def __init__(self, client: redis.Redis, generation_id: str) -> None:
        self.client = client
        self.keys = GenerationKeys(generation_id)
        self.generation_id = generation_id
        self._record = client.register_script(_RECORD_SCRIPT)
        self._begin = client.register_script(_BEGIN_SCRIPT)
        self._close = client.register_script(_CLOSE_SCRIPT)
        self._claim = client.register_script(_CLAIM_SCRIPT)
        self._release = client.register_script(_RELEASE_SCRIPT)
        self._renew = client.register_script(_RENEW_SCRIPT)
        self._complete = client.register_script(_COMPLETE_SCRIPT)
        # Header and state as ``create`` stored them: what a read right after would return.
        self.created: tuple[dict[str, Any], dict[str, str]] | None = None
        self.first_stored: list[Candidate] = []  # ``create``'s first 1,000 candidates, in order

    # -- creating -------------------------------------------------------------
    def create(
        self,
        spec: GenerationSpec,
        candidates: Iterable[Candidate | dict[str, Any]] | None = None,
        *,
        also: Callable[[Pipeline, int], object] | None = None,
        collector: str | None = None,
        lease_s: float = 0.0,
    ) -> int:
        """Store the spec, its candidates (one list per priority) and a fresh state.

        ``candidates`` (default: the spec's own) is streamed in batches, so a population read
        from a file is never held in memory; up to 1,000 are stored with the state in one round
        trip. ``also(pipeline, total)`` adds commands to that step (the chord's size);
        ``collector``: a launcher's token, given the collector lease for ``lease_s`` in it too.
        Refuses an id already in use; returns the count (and sets ``created``).
        """
        if not self.client.hsetnx(self.keys.state, "status", RUNNING):
            raise ValueError(
                f"generation {spec.id!r} already exists in Redis: `evofleet delete {spec.id}` "
                f"removes it, `evofleet resume {spec.id}` re-attaches"
            )
        try:
            return self._store(spec, spec.candidates if candidates is None else candidates,
                               also, collector, lease_s)
        except BaseException:
            # A bad population (or an iterator that raised) leaves nothing behind: the same id
            # can be launched again.
            self.client.delete(*self.keys.all())
            raise

    def _store(
        self,
        spec: GenerationSpec,
        candidates: Iterable[Candidate | dict[str, Any]],
        also: Callable[[Pipeline, int], object] | None,
        collector: str | None,
        lease_s: float,
    ) -> int:
        now = time.time()
        header = json.dumps(spec.header())
        totals = dict.fromkeys(PRIORITIES, 0)
        seen: set[str] = set()
        batch: list[Candidate] = []
        for item in candidates:
            candidate = item if isinstance(item, Candidate) else Candidate.model_validate(item)
            if candidate.id in seen:
                raise ValueError(f"duplicate candidate id {candidate.id!r}")
            seen.add(candidate.id)
            batch.append(candidate)
            if len(batch) == 1000:
                with self.client.pipeline(transaction=False) as pipe:
                    self._push(pipe, batch, totals)
                    pipe.execute()
                self.first_stored = self.first_stored or batch
                batch = []
        if not any(totals.values()) and not batch:
            raise ValueError(f"generation {spec.id!r} has no candidates")
        with self.client.pipeline(transaction=False) as pipe:
            self._push(pipe, batch, totals)
            total = sum(totals.values())
            state: dict[FieldT, EncodableT] = {
                "total": total,
                **{f"t_{priority}": count for priority, count in totals.items()},
                "chunks": 0,
                "submitted": 0,
                "recorded": 0,
                "created_at": now,
                "deadline_at": now + spec.deadline,
            }
            pipe.set(self.keys.header, header)
            pipe.hset(self.keys.state, mapping=state)
            pipe.zadd(GENERATIONS_INDEX, {self.generation_id: now})
            if also is not None:
                also(pipe, total)
            if collector is not None:
                pipe.set(self.keys.collector, collector, px=int(lease_s * 1000))
            pipe.execute()
        self.first_stored = self.first_stored or batch
        self.created = (json.loads(header), {
            "status": RUNNING, **{str(name): str(value) for name, value in state.items()},
            "generation_id": self.generation_id,
        })
        return total

    def _push(self, pipe: Pipeline, batch: list[Candidate], totals: dict[str, int]) -> None:
        for priority in PRIORITIES:
            rows = [c.model_dump_json() for c in batch if c.priority.value == priority]
            if rows:
                pipe.rpush(self.keys.candidates(priority), *rows)
                totals[priority] += len(rows)

    def exists(self) -> bool:
        return bool(self.client.exists(self.keys.state))

    def header(self) -> GenerationHeader:
        raw = self.client.get(self.keys.header)
        if raw is None:
            raise GenerationNotFound(self.generation_id)
        return GenerationHeader.model_validate_json(raw)

    def candidates(self, priority: str, start: int = 0, stop: int = -1) -> list[Candidate]:
        """One priority's candidates, positions ``start`` to ``stop`` inclusive."""
        raw = self.client.lrange(self.keys.candidates(priority), start, stop)
        return [Candidate.model_validate_json(item) for item in raw]

    def iter_candidates(self, page: int = 1000) -> Iterator[list[Candidate]]:
        """Every candidate, highest priority first, a page at a time."""
        for priority in PRIORITIES:
            total = int(self.client.llen(self.keys.candidates(priority)))
            for start in range(0, total, page):
                yield self.candidates(priority, start, start + page - 1)

    # -- recording ------------------------------------------------------------
    def record(self, result: EvaluationResult) -> bool:
        """Record a result; False when the candidate already had one (nothing changes)."""
        return self.record_many([result])[0]

    def record_many(self, results: Sequence[EvaluationResult]) -> list[bool]:
        """Record results in one round trip; per result, False when its candidate already had
        one. Results that end together (a batch call, a generation's close) go this way."""
        if not results:
            return []
        args: list[str] = []
        for result in results:
            payload = result.model_dump_json()
            field = "r" if len(payload) <= STREAM_INLINE_BYTES else "c"
            args += [result.candidate_id, payload, result.status.value, result.priority.value, field]
        flags = self._record(
            keys=[self.keys.results, self.keys.stream, self.keys.state, self.keys.attached],
            args=args,
        )
        recorded = [bool(flag) for flag in flags]
        for result, was_recorded in zip(results, recorded, strict=True):
            if was_recorded:
                metrics.count_result(result)  # a no-op outside a worker started with a metrics port
        return recorded

    def stream_results(self, entries: Sequence[tuple[Any, Mapping[bytes, bytes]]]) -> list[EvaluationResult]:
        """The results of stream entries, in order: whole ones ('r') as they are, large ones
        ('c': the candidate id) read from the results hash in one round trip."""
        by_id = [fields[b"c"] for _entry_id, fields in entries if b"r" not in fields]
        large = dict(zip(by_id, self.client.hmget(self.keys.results, by_id), strict=True)) if by_id else {}
        results = []
        for _entry_id, fields in entries:
            raw = fields.get(b"r") or large.get(fields.get(b"c", b""))
            if raw is not None:
                results.append(EvaluationResult.model_validate_json(raw))
        return results

    def begin(
        self, candidate_ids: Sequence[str], *, count_attempts: bool, with_header: bool = False
    ) -> TaskStart | None:
        """One round trip before evaluating: None when the generation is closed, else which
        candidates already have a result, with ``count_attempts`` the attempt each starts, and
        with ``with_header`` the header (GenerationNotFound if there is none)."""
        reply = self._begin(
            keys=[self.keys.state, self.keys.results, self.keys.attempts, self.keys.header],
            args=["1" if count_attempts else "0", "1" if with_header else "0", *candidate_ids],
        )
        if not reply[0]:
            return None
        flags = reply[2:]
        start = TaskStart()
        if with_header:
            if not reply[1]:
                raise GenerationNotFound(self.generation_id)
            start.header = GenerationHeader.model_validate_json(reply[1])
        for index, candidate_id in enumerate(candidate_ids):
            done, attempt = flags[2 * index], flags[2 * index + 1]
            if done:
                start.recorded.add(candidate_id)
            elif attempt:
                start.attempts[candidate_id] = int(attempt)
        return start

    def attempts(self, candidate_ids: Iterable[str]) -> dict[str, int]:
        ids = list(candidate_ids)
        if not ids:
            return {}
        values = self.client.hmget(self.keys.attempts, ids)
        return {cid: int(v or 0) for cid, v in zip(ids, values, strict=True)}

    def recorded_ids(self, candidate_ids: Iterable[str]) -> set[str]:
        """Which of these candidates already have a result."""
        ids = list(candidate_ids)
        if not ids:
            return set()
        with self.client.pipeline(transaction=False) as pipe:
            for cid in ids:
                pipe.hexists(self.keys.results, cid)
            flags = pipe.execute()
        return {cid for cid, flag in zip(ids, flags, strict=True) if flag}

    def note_attached(self, candidate_id: str, fields: dict[str, Any]) -> None:
        """Keep what an evaluator attached so far, for a pool child that dies before it records."""
        self.client.hset(self.keys.attached, candidate_id, json.dumps(fields))

    def attached(self, candidate_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """What these candidates' evaluators attached before their pool child died."""
        ids = list(candidate_ids)
        values = self.client.hmget(self.keys.attached, ids) if ids else []
        return {cid: json.loads(v) for cid, v in zip(ids, values, strict=True) if v is not None}

    def result(self, candidate_id: str) -> EvaluationResult | None:
        raw = self.client.hget(self.keys.results, candidate_id)
        return None if raw is None else EvaluationResult.model_validate_json(raw)

    def iter_results(self, page: int = 1000) -> Iterator[EvaluationResult]:
        """Every recorded result, streamed with HSCAN (unordered)."""
        for _cid, raw in self.client.hscan_iter(self.keys.results, count=page):
            yield EvaluationResult.model_validate_json(raw)

    # -- the collector lease ----------------------------------------------------
    def claim_collector(self, token: str, ttl_s: float) -> bool:
        """Take or renew the right to submit and collect for ``ttl_s``; False if another holds it."""
        return bool(self._claim(keys=[self.keys.collector], args=[token, int(ttl_s * 1000)]))

    def renew_collector(self, token: str, ttl_s: float) -> tuple[bool, str | None]:
        """``claim_collector`` and the generation's status, in one round trip."""
        held, status = self._renew(keys=[self.keys.collector, self.keys.state],
                                   args=[token, int(ttl_s * 1000)])
        return bool(held), None if status is None else _text(status)

    def release_collector(self, token: str) -> None:
        self._release(keys=[self.keys.collector], args=[token])

    def collector(self) -> str | None:
        """Who holds the collector lease, if anyone."""
        value = self.client.get(self.keys.collector)
        return None if value is None else _text(value)

    # -- state ----------------------------------------------------------------
    def state(self) -> dict[str, str]:
        raw = self.client.hgetall(self.keys.state)
        if not raw:
            raise GenerationNotFound(self.generation_id)
        state = {_text(k): _text(v) for k, v in raw.items()}
        state["generation_id"] = self.generation_id
        return state

    def header_and_state(self) -> tuple[dict[str, Any], dict[str, str]]:
        """The header (``{}`` if none) and the state (as ``state``), in one round trip."""
        with self.client.pipeline(transaction=False) as pipe:
            pipe.get(self.keys.header)
            pipe.hgetall(self.keys.state)
            header, raw = pipe.execute()
        if not raw:
            raise GenerationNotFound(self.generation_id)
        state = {_text(k): _text(v) for k, v in raw.items()}
        state["generation_id"] = self.generation_id
        return (json.loads(header) if header else {}), state

    def status(self) -> str | None:
        value = self.client.hget(self.keys.state, "status")
        return None if value is None else _text(value)

    def is_open(self) -> bool:
        """False once the generation is complete, partial or cancelled, or deleted."""
        return self.status() == RUNNING

    def close(self, status: str) -> str:
        """End the generation with ``status`` unless it already ended; return the end state."""
        assert status in END_STATES
        return _text(self._close(keys=[self.keys.state], args=[status, time.time()]))

    def complete(self, summary: dict[str, Any], retention_s: int | None) -> str:
        """Mark a running generation complete with its summary; return the end state."""
        return self.complete_and_read(summary, retention_s)[0]

    def complete_and_read(
        self, summary: dict[str, Any], retention_s: int | None, *, release: str | None = None
    ) -> tuple[str, dict[str, Any] | None]:
        """``complete``, and read back the summary stored now (this one, or the one of whoever
        ended the generation first), with the expiry and (``release``: the holder's token) the
        collector lease's release, in one round trip."""
        now = time.time()
        reply = self._complete(
            keys=[self.keys.state, self.keys.summary, self.keys.collector, GENERATIONS_INDEX,
                  *self.keys.all()],
            args=[to_json(summary), now, release or "", retention_s or 0,
                  now - (retention_s or 0)],
        )
        if len(reply) == 1:  # this call ended it with ``summary``
            return _text(reply[0]), summary
        ended, stored = reply
        return (
            _text(ended) if ended else "unknown",
            None if stored is None else json.loads(stored),
        )

    def expire(self, retention_s: int | None) -> None:
        """Let every key of the generation expire after ``retention_s``."""
        with self.client.pipeline(transaction=False) as pipe:
            self._expire(pipe, retention_s)
            pipe.execute()

    def delete(self) -> int:
        """Remove every key of the generation and its index entry; return the keys removed."""
        with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(*self.keys.all(), self.keys.collector)
            pipe.zrem(GENERATIONS_INDEX, self.generation_id)
            removed, _ = pipe.execute()
        return int(removed)

    def _expire(self, pipe: Pipeline, retention_s: int | None) -> None:
        if not retention_s:
            return
        for key in self.keys.all():
            pipe.expire(key, retention_s)
        # The index keeps no generation whose keys may be gone: those created before that.
        pipe.zremrangebyscore(GENERATIONS_INDEX, "-inf", f"({time.time() - retention_s}")

    def write_summary(self, summary: dict[str, Any], retention_s: int | None) -> None:
        with self.client.pipeline(transaction=False) as pipe:
            pipe.set(self.keys.summary, to_json(summary))
            self._expire(pipe, retention_s)
            pipe.execute()

    def summary(self) -> dict[str, Any] | None:
        raw = self.client.get(self.keys.summary)
        return None if raw is None else json.loads(raw)

    def record_missing(self, status: Status, message: str) -> int:
        """Record ``status`` for every candidate without a result; return how many."""
        header = self.header()
        now = utc_now()
        # When the exact moment its chunk was queued is not known, a candidate was submitted
        # when its generation was (launch streams every candidate into Redis first).
        created = self.client.hget(self.keys.state, "created_at")
        submitted_at = from_timestamp(float(created)) if created is not None else None
        recorded = 0
        for batch in self.iter_candidates():
            done = self.recorded_ids(c.id for c in batch)
            attempts = self.attempts(c.id for c in batch if c.id not in done)
            results = [
                EvaluationResult(
                    generation_id=header.id,
                    candidate_id=candidate.id,
                    status=status,
                    priority=candidate.priority,
                    attempts=attempts.get(candidate.id, 0),
                    error={"type": status.value.capitalize(), "message": message},
                    submitted_at=submitted_at,
                    finished_at=now,
                    **candidate_echo(candidate),
                )
                for candidate in batch if candidate.id not in done
            ]
            recorded += sum(self.record_many(results))
        return recorded


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
