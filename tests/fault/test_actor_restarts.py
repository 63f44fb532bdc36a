"""Kills: a shard killed mid-stream is restarted by Ray, and routers re-send what it lost."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shush.actors import ray_calls
from tests.factories import event_dict
from tests.integration.conftest import RunningEngine, start_engine

pytestmark = pytest.mark.integration


@pytest.fixture
def engine(ray_session: None, tmp_path: Path) -> Iterator[RunningEngine]:
    running = start_engine(tmp_path)
    yield running
    running.client.close()
    running.engine.stop()


def _shards(engine: RunningEngine) -> list[object]:
    shards: list[object] = ray_calls.call_blocking(engine.engine.supervisor, "get_shards",
                                                   timeout_s=10)
    return shards


def test_events_keep_flowing_across_a_shard_kill(engine: RunningEngine) -> None:
    now = int(time.time() * 1000)
    customers = [f"k-{uuid.uuid4().hex[:8]}-{i}" for i in range(200)]
    before = engine.client.submit([event_dict(c, "balance_update", now, balance=500.0)
                                   for c in customers])
    assert before.accepted == 200
    ray_calls.kill(_shards(engine)[0], no_restart=False)  # Ray restarts it
    after = engine.client.submit([event_dict(c, "savings_withdrawal", now, amount=9000.0)
                                  for c in customers])
    # Every event is accepted: the router re-sent the batch once the shard was back.
    assert (after.accepted, after.rejected) == (200, [])
    treated = engine.wait_for(lambda ts: len(ts) >= 200)
    assert {t["customer_id"] for t in treated} == set(customers)


def test_supervisor_recreates_a_shard_that_is_gone_for_good(engine: RunningEngine) -> None:
    ray_calls.kill(_shards(engine)[1], no_restart=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        health = ray_calls.call_blocking(engine.engine.supervisor, "health", timeout_s=10)
        if health["restarts"]["shard"] >= 1 and all(s["alive"] for s in health["shards"]):
            break
        time.sleep(0.2)
    assert health["restarts"]["shard"] >= 1
    customer = f"k-{uuid.uuid4().hex[:8]}"
    result = engine.client.submit([event_dict(customer, "savings_withdrawal",
                                              int(time.time() * 1000), amount=9000.0)])
    assert result.accepted == 1
    assert engine.for_customer(customer)
