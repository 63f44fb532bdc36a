"""Stop the engine mid-scenario, start it again on the same store, finish: same results."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from shush.actors import ray_calls
from shush.engine.errors import ConfigError
from tests.factories import event_dict
from tests.integration.conftest import RunningEngine, start_engine

pytestmark = pytest.mark.integration

NOW = int(time.time() * 1000)


def scenario() -> list[list[dict[str, Any]]]:
    """Two halves; the second depends on state from the first (a crossing that must not
    re-fire, a duplicate that must be dropped, a profile that decides eligibility)."""
    first = [
        event_dict("r-ann", "profile_update", NOW, event_id="p-ann", segment="student"),
        event_dict("r-bob", "balance_update", NOW, event_id="b1", balance=500.0),
        event_dict("r-bob", "balance_update", NOW + 1, event_id="b2", balance=50.0),
        event_dict("r-cat", "savings_withdrawal", NOW, event_id="w-cat", amount=6000.0),
    ]
    second = [
        event_dict("r-ann", "savings_withdrawal", NOW + 2, event_id="w-ann", amount=6000.0),
        event_dict("r-bob", "balance_update", NOW + 3, event_id="b3", balance=40.0),
        event_dict("r-cat", "savings_withdrawal", NOW, event_id="w-cat", amount=6000.0),
    ]
    return [first, second]


def _summary(treatments: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return sorted((t["customer_id"], t["action_id"], t["idempotency_key"]) for t in treatments)


def _run(running: RunningEngine, events: list[dict[str, Any]], expected: int) -> None:
    running.client.submit(events)
    running.wait_for(lambda ts: len(ts) >= expected)
    time.sleep(0.3)  # nothing more must arrive


def test_a_restarted_engine_resumes_where_it_stopped(ray_session: None, tmp_path: Path) -> None:
    first, second = scenario()
    straight = start_engine(tmp_path / "straight")
    try:
        _run(straight, first, 2)
        _run(straight, second, 3)
        expected = _summary(straight.treatments())
    finally:
        straight.engine.stop()
    assert [c for c, _, _ in expected] == ["r-ann", "r-bob", "r-cat"]

    interrupted = start_engine(tmp_path / "interrupted")
    _run(interrupted, first, 2)
    interrupted.client.close()
    interrupted.engine.stop()  # a clean stop: shards snapshot
    resumed = start_engine(tmp_path / "interrupted")
    try:
        _run(resumed, second, 3)
        assert _summary(resumed.treatments()) == expected
    finally:
        resumed.engine.stop()


def test_a_crashed_shard_rebuilds_from_the_journal(ray_session: None, tmp_path: Path) -> None:
    running = start_engine(tmp_path, shard={"snapshot_interval_s": 3600})  # journal only
    try:
        first, second = scenario()
        _run(running, first, 2)
        shards = ray_calls.call_blocking(running.engine.supervisor, "get_shards", timeout_s=10)
        for shard in shards:
            ray_calls.kill(shard, no_restart=False)  # Ray restarts them: state from the store
        _run(running, second, 3)
        customers = {t["customer_id"] for t in running.treatments()}
        assert customers == {"r-ann", "r-bob", "r-cat"}
        assert len(running.treatments()) == 3  # no re-fire of the crossing, no duplicate
        # The treatments may come from a shard that took its batch just before it went: wait
        # for the restarted ones.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            health = ray_calls.call_blocking(running.engine.supervisor, "health", timeout_s=10)
            if all(s["alive"] for s in health["shards"]):
                break
            time.sleep(0.2)
        assert sum(s["recovered"].get("replayed", 0) for s in health["shards"]) >= 4
    finally:
        running.client.close()
        running.engine.stop()


def test_a_store_refuses_a_new_partition_count(ray_session: None, tmp_path: Path) -> None:
    """Its customers would hash to partitions their snapshots and journal marks are not in."""
    first, _ = scenario()
    running = start_engine(tmp_path)
    _run(running, first, 2)
    running.client.close()
    running.engine.stop()
    with pytest.raises(ConfigError, match="holds customers in 1024 partitions"):
        start_engine(tmp_path, num_partitions=512)
