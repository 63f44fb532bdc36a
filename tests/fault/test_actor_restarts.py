"""Kills: a shard killed mid-stream is restarted by Ray, and routers re-send what it lost; a
router killed is restarted and serves gRPC again, while the others take its clients."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shush.actors import ray_calls
from shush.client import AsyncShushClient, ShushClient
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
    # Every event is taken in once: the router re-sent the batch once the shard was back, and
    # what the dying shard journaled before it went comes back as duplicates.
    assert (after.accepted + after.duplicates, after.rejected) == (200, [])
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


def _router_health(engine: RunningEngine) -> list[dict[str, Any]]:
    health = ray_calls.call_blocking(engine.engine.supervisor, "health", timeout_s=10)
    routers: list[dict[str, Any]] = health["routers"]
    return routers


@pytest.fixture
def two_routers(ray_session: None, tmp_path: Path) -> Iterator[RunningEngine]:
    running = start_engine(tmp_path, num_routers=2)
    yield running
    running.client.close()
    running.engine.stop()


def test_every_router_serves_grpc_and_a_killed_one_serves_again(
        two_routers: RunningEngine) -> None:
    engine = two_routers
    port = engine.engine.port
    assert [r["edge_port"] for r in _router_health(engine)] == [port, port]
    now = int(time.time() * 1000)
    customers = [f"r-{uuid.uuid4().hex[:8]}-{i}" for i in range(40)]
    # 16 connections, which the kernel hands to the routers at random: all to one router
    # once in 2**15 runs.
    with ShushClient(engine.engine.target, connections=16) as client:
        for customer in customers[:20]:
            assert client.submit([event_dict(customer, "balance_update", now,
                                                balance=500.0)]).accepted == 1
    assert all(r["received"] > 0 for r in _router_health(engine))
    frames = engine.engine.frames_target
    assert frames is not None
    assert [r["frames_port"] for r in _router_health(engine)] == [int(frames.split(":")[1])] * 2
    before = [r["received"] for r in _router_health(engine)]

    async def over_frames() -> int:  # the frames port is shared the same way
        async with AsyncShushClient(engine.engine.target, frames_target=frames,
                                    connections=16, direct_to_shards=False) as client:
            results = await asyncio.gather(*(client.submit([event_dict(
                c, "balance_update", now, balance=400.0)]) for c in customers[:20]))
            return sum(r.accepted for r in results)

    assert asyncio.run(over_frames()) == 20
    assert all(r["received"] > b for r, b in zip(_router_health(engine), before, strict=True))

    routers = ray_calls.call_blocking(engine.engine.supervisor, "get_routers", timeout_s=10)
    ray_calls.kill(routers[0], no_restart=False)  # Ray restarts it, without its server
    with ShushClient(engine.engine.target, connections=4) as client:  # the other one serves
        result = client.submit([event_dict(c, "savings_withdrawal", now, amount=9000.0)
                                for c in customers])
    # Every event is taken in once: a batch the dying router delivered before it went comes
    # back as duplicates when the client re-sends it through the other one.
    assert (result.accepted + result.duplicates, result.rejected) == (40, [])
    deadline = time.monotonic() + 20  # the supervisor's next check asks it to serve again
    while time.monotonic() < deadline:
        found = _router_health(engine)
        if all(r.get("alive") and r.get("edge_port") == port for r in found):
            break
        time.sleep(0.2)
    assert [r.get("edge_port") for r in found] == [port, port]
    assert [r.get("frames_port") for r in found] == [int(frames.split(":")[1])] * 2
    assert {t["customer_id"] for t in engine.wait_for(lambda ts: len(ts) >= 40)} >= set(customers)
