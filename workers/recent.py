"""A mapping that keeps only its most recently used keys: a long-lived process's caches of
generations, deployments or evaluators stay bounded however many it sees."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class RecentMap(Generic[K, V]):
    """At most ``limit`` keys; ``get`` and ``put`` make a key the newest, the oldest go first.
    Not thread-safe: callers that share one across threads hold their own lock."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        self.limit = limit
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        """The value of ``key`` (now the newest), or None."""
        if key not in self._items:
            return None
        self._items.move_to_end(key)
        return self._items[key]

    def put(self, key: K, value: V) -> list[V]:
        """Set ``key`` as the newest; returns the values that fell out, oldest first."""
        self._items[key] = value
        self._items.move_to_end(key)
        evicted = []
        while len(self._items) > self.limit:
            evicted.append(self._items.popitem(last=False)[1])
        return evicted

    def pop_all(self) -> list[V]:
        """Empty it; returns every value, oldest first."""
        values = list(self._items.values())
        self._items.clear()
        return values

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)
