"""The keeper re-scores only messages still unacknowledged, and ends once a stopped worker holds none."""

from __future__ import annotations

import time

import redis

from tests.conftest import unique_id
from workers.visibility import VisibilityKeeper, refresh_interval


def test_refresh_updates_held_messages_and_never_adds_one(
    redis_url: str, redis_client: redis.Redis
) -> None:
    index = unique_id("unacked_index-")
    redis_client.zadd(index, {"held": 1.0, "other": 1.0})
    keeper = VisibilityKeeper(redis_url, index, interval_s=1.0)
    before = time.time()

    # "acked" was acknowledged (so removed) between the snapshot and the refresh.
    assert keeper.refresh(["held", "acked"]) == 1

    assert float(redis_client.zscore(index, "held") or 0) >= before
    assert redis_client.zscore(index, "other") == 1.0
    assert redis_client.zscore(index, "acked") is None
    assert keeper.refresh([]) == 0


def test_a_stopped_keeper_with_nothing_held_ends(redis_url: str) -> None:
    keeper = VisibilityKeeper(redis_url, unique_id("unacked_index-"), interval_s=30.0).start()
    keeper.stop()
    keeper.join(5)
    assert not keeper.running


def test_interval_is_a_quarter_of_the_timeout_up_to_a_minute() -> None:
    assert refresh_interval(2) == 0.5
    assert refresh_interval(300) == 60.0
