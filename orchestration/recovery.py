"""Finds candidates whose task message Redis lost in an outage and publishes them again.

kombu's Redis transport takes a message off its queue (BRPOP) and records it as unacked in a
second command; a Redis stopped between the two keeps the pop, and the worker drops the message
when its connection fails: the message is nowhere, and no re-delivery brings it back.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

import redis

from orchestration.submit import Submitter, TaskMessages
from workers.contract import PRIORITIES, Candidate
from workers.keys import EVALUATE_TASK
from workers.ledger import Ledger

logger = logging.getLogger(__name__)

QUIET_S = 5.0  # after an outage, first check this late: workers have reconnected by then
RECHECK_S = 2.0  # a candidate is lost when found nowhere twice this far apart (a message is
# between its BRPOP and its unacked record for microseconds)
INTERVAL_S = 5.0  # later checks, until the generation ends, at most this often
RESTART_CHECK_S = 2.0  # how often the broker's run_id is compared (a restart changes it)
PAGE = 1000


def carried_candidates(broker: redis.Redis, messages: TaskMessages, generation_id: str) -> set[str]:
    """Ids of this generation's candidates held by a message queued or delivered (unacked)."""
    carried: set[str] = set()
    # Unacked first: a message moves from a queue to unacked far more often than back.
    for _tag, raw in broker.hscan_iter(messages.unacked_key, count=PAGE):
        carried.update(_candidate_ids(raw, generation_id, unacked=True))
    for priority in PRIORITIES:
        key = messages.queue_key(priority)
        # Paged from the head: LPUSH there only shifts what is left to read (seen twice, never
        # skipped); BRPOP and restores take and put at the tail.
        start = 0
        while page := broker.lrange(key, start, start + PAGE - 1):
            for raw in page:
                carried.update(_candidate_ids(raw, generation_id))
            start += PAGE
    return carried


def _candidate_ids(raw: bytes | str, generation_id: str, *, unacked: bool = False) -> list[str]:
    """The candidate ids a task message for ``generation_id`` carries ([] for any other); an
    unacked record is JSON ``[message, exchange, routing_key]``."""
    try:
        message: Any = json.loads(raw)
        if unacked:
            message = message[0]
        if message["headers"].get("task") != EVALUATE_TASK:
            return []
        body = message["body"]
        if message["properties"].get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args, kwargs, _embed = json.loads(body)
        generation = args[0] if args else kwargs.get("generation_id")
        candidates = args[1] if len(args) > 1 else kwargs.get("candidates", [])
        if generation != generation_id:
            return []
        return [str(c["id"]) for c in candidates]
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        return []  # not an evaluate message of ours


def missing_candidates(ledger: Ledger, broker: redis.Redis, messages: TaskMessages) -> list[Candidate]:
    """Published candidates with no result that no message carries."""
    state = ledger.state()  # read first: a candidate counted here already has its message
    if int(state.get("recorded", 0)) >= int(state.get("submitted", 0)):
        return []
    carried = carried_candidates(broker, messages, ledger.generation_id)
    # Results are read after the messages: a message acknowledged meanwhile left its result.
    missing: list[Candidate] = []
    for page in _published(ledger, state):
        unseen = [c for c in page if c.id not in carried]
        if unseen:
            recorded = ledger.recorded_ids(c.id for c in unseen)
            missing.extend(c for c in unseen if c.id not in recorded)
    return missing


def _published(ledger: Ledger, state: dict[str, str]) -> Iterator[list[Candidate]]:
    for priority in PRIORITIES:
        published = int(state.get(f"s_{priority}", 0))
        for start in range(0, published, PAGE):
            yield ledger.candidates(priority, start, min(start + PAGE, published) - 1)


def republish(submitter: Submitter, candidates: list[Candidate]) -> int:
    """Publish ``candidates`` again, as messages of no chord (the chord's count stays), next to
    be taken from their queues; return how many messages."""
    chunk_size = submitter.chunk_size
    size = submitter.auto.size(len(candidates)) if chunk_size == "auto" else int(chunk_size)
    messages = submitter.messages
    now = time.time()
    sent = 0
    with submitter.broker.pipeline(transaction=False) as pipe:
        for priority in PRIORITIES:
            group = [c for c in candidates if c.priority.value == priority]
            for start in range(0, len(group), size):
                chunk = group[start:start + size]
                args = [submitter.generation_id, chunk, now]
                # RPUSH: BRPOP takes from the tail, and these were due long ago.
                pipe.rpush(messages.queue_key(priority), messages.build(
                    args, priority, None, submitter.time_limit * len(chunk), chord=False))
                sent += 1
        pipe.execute()
    return sent


class BrokerRestarts:
    """Counts the restarts of one broker client's Redis, seen as a new ``run_id``: one INFO per
    ``RESTART_CHECK_S`` for all the generations a process collects through that client."""

    def __init__(self) -> None:
        self.count = 0
        self.run_id: str | None = None
        self.next_check = 0.0  # monotonic
        self._lock = threading.Lock()

    def seen(self, broker: redis.Redis, now: float) -> int:
        """Restarts seen so far, reading the ``run_id`` first if a check is due."""
        with self._lock:
            if now < self.next_check:
                return self.count
            self.next_check = now + RESTART_CHECK_S
        try:
            run_id = str(broker.info("server")["run_id"])
        except (redis.ResponseError, KeyError):  # INFO refused (an ACL): outages seen only
            self.next_check = float("inf")
            return self.count
        with self._lock:
            if self.run_id is not None and run_id != self.run_id:
                self.count += 1
            self.run_id = run_id
            return self.count


_RESTARTS: weakref.WeakKeyDictionary[redis.Redis, BrokerRestarts] = weakref.WeakKeyDictionary()
_RESTARTS_LOCK = threading.Lock()


def broker_restarts(broker: redis.Redis) -> BrokerRestarts:
    """The restart count shared by every generation collected through ``broker``."""
    with _RESTARTS_LOCK:
        found = _RESTARTS.get(broker)
        if found is None:
            found = _RESTARTS[broker] = BrokerRestarts()
        return found


class LostMessageWatch:
    """Checks, from the end of a Redis outage until the generation ends, for lost candidates.

    An outage is seen by the collector (Redis away longer than its client retries) or here, as
    a new ``run_id`` of the broker's Redis (a restart the client's retries hid).
    """

    def __init__(self, ledger: Ledger, submitter: Submitter) -> None:
        self.ledger = ledger
        self.submitter = submitter
        self.next_check: float | None = None  # monotonic; None: no outage seen
        self.suspects: set[str] = set()  # missing at the previous check
        self.restarts = broker_restarts(submitter.broker)
        self.restarts_seen: int | None = None  # the count at this generation's first poll

    def outage_ended(self, now: float) -> None:
        self.next_check = now + QUIET_S
        self.suspects = set()

    def poll(self, now: float) -> int:
        """Check if one is due; republish what was missing twice; return how many."""
        self._note_restart(now)
        if self.next_check is None or now < self.next_check:
            return 0
        started = time.monotonic()
        missing = missing_candidates(self.ledger, self.submitter.broker, self.submitter.messages)
        lost = [c for c in missing if c.id in self.suspects]
        if lost:
            republish(self.submitter, lost)
            logger.warning("generation %s: %d candidate(s) lost their task message in a Redis "
                           "outage; published again", self.ledger.generation_id, len(lost))
        self.suspects = {c.id for c in missing} - {c.id for c in lost}
        # A large generation's check takes a while: never spend more than a tenth of the time.
        cost = time.monotonic() - started
        self.next_check = now + max(RECHECK_S if self.suspects else INTERVAL_S, 10 * cost)
        return len(lost)

    def _note_restart(self, now: float) -> None:
        seen = self.restarts.seen(self.submitter.broker, now)
        if self.restarts_seen is not None and seen != self.restarts_seen:
            logger.warning("generation %s: Redis restarted", self.ledger.generation_id)
            self.outage_ended(now)
        self.restarts_seen = seen
