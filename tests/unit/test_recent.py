"""RecentMap: the bounded caches of long-lived workers and launchers."""

from __future__ import annotations

import pytest

from workers.recent import RecentMap


def test_the_least_recently_used_key_goes_first() -> None:
    recent: RecentMap[str, int] = RecentMap(2)
    assert recent.put("a", 1) == [] and recent.put("b", 2) == []
    assert recent.get("a") == 1  # "a" is now the newest
    assert recent.put("c", 3) == [2]  # so "b" fell out
    assert "b" not in recent and "a" in recent and len(recent) == 2
    assert recent.get("b") is None
    assert recent.put("a", 10) == []  # setting a kept key replaces its value, nothing falls out
    assert recent.get("a") == 10
    assert recent.pop_all() == [3, 10] and len(recent) == 0


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RecentMap(0)
