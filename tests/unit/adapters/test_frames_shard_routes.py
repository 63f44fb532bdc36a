"""Submits and Decides straight to the customer's shard: the shards' frames servers,
``Routes``, and the client's choice between a shard and the routers.

Real frames servers on a loop in a thread: the routers' edge in front of a fake gateway, each
shard's server in front of a fake shard that records what it was asked.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
import uvloop

from shush.adapters import client as client_module
from shush.adapters.client import (
    ROUTES_MAX_AGE_S,
    ROUTES_RETRY_S,
    AsyncShushClient,
    ShardRoutes,
)
from shush.adapters.frames.channel import FramesChannel, FramesStub
from shush.adapters.frames.shard_edge import ShardFramesServer, advertised_host
from shush.adapters.grpc import shush_pb2 as pb
from shush.adapters.grpc.auth import hash_key
from shush.engine import codec
from shush.engine.arbitration import Verdict
from shush.engine.config import EngineConfig, GrpcConfig
from shush.engine.errors import BackpressureError, WrongShard
from shush.engine.partitions import PartitionTable
from tests.unit.adapters.grpc_fakes import FakeGateway, serving_both

TABLE = PartitionTable.round_robin(8, 2)
CUSTOMERS = [f"c{i}" for i in range(8)]  # shards 0, 1, 1, 0, 0, 1, 0, 1 (TABLE)
KEY = "sub-7f3a"
KEYS = [{"name": "crm", "sha256": hash_key(KEY), "role": "submitter"}]


@dataclass
class FakeShard:
    """A shard's ``ShardFront``: owns its customers by ``table``; records its Decides."""

    index: int
    table: PartitionTable = TABLE
    seen: list[str] = field(default_factory=list)
    taken: list[list[str]] = field(default_factory=list)  # each submit's customers
    busy: int = 0  # submits refused as too many before one is taken

    def shard_of(self, customer_id: str) -> int:
        return self.table.shard_of(customer_id)

    async def take_direct(self, events: list[Any], packed: bytes | None, arrived_s: float,
                          taken_s: float | None = None) -> list[list[Any]]:
        for event in events:
            if self.shard_of(event[1]) != self.index:
                raise WrongShard(event[1], owner=self.shard_of(event[1]), shard=self.index)
        if self.busy:
            self.busy -= 1
            raise BackpressureError("shard is full", retry_after_s=0.01)
        self.taken.append([e[1] for e in events])
        return [[codec.ACCEPTED, ""] for _ in events]

    async def decide(self, customer_id: str, channel: str | None, present: bool = False,
                     sent_at_s: float | None = None) -> bytes:
        self.seen.append(customer_id)
        return codec.encode_verdicts([Verdict(customer_id, (), None)], removed=[],
                                     treatment_id="")


class LoopThread:
    """An event loop in a daemon thread, where the shards' servers run."""

    def __init__(self) -> None:
        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(timeout=10)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


@contextmanager
def shard_servers(shards: list[FakeShard], grpc_config: GrpcConfig | None = None
                  ) -> Iterator[list[str]]:
    """Each shard's server; yield their addresses."""
    config = EngineConfig.model_validate({"grpc": (grpc_config or GrpcConfig()).model_dump()})
    loop = LoopThread()
    servers = [ShardFramesServer(config, shard) for shard in shards]
    try:
        yield [loop.run(server.start()) for server in servers]
    finally:
        for server in servers:
            loop.run(server.stop(0.1))
        loop.close()


@contextmanager
def routed(shards: list[FakeShard]) -> Iterator[tuple[str, FakeGateway, list[str]]]:
    """The shards' servers and the routers' edge, whose ``Routes`` names every shard's server
    (by ``TABLE``): yield the frames target, the routers' gateway and the shards' addresses."""
    with shard_servers(shards) as addresses, serving_both(GrpcConfig(frames_port=0)) as (
            _, frames, gateway):
        gateway.table, gateway.shard_addresses = TABLE, dict(enumerate(addresses))
        yield frames, gateway, addresses


def decide_all(frames: str, customers: list[str], **settings: Any) -> list[str]:
    async def go() -> list[str]:
        async with AsyncShushClient("127.0.0.1:1", frames_target=frames, timeout_s=5,
                                    max_attempts=1, **settings) as client:
            return [(await client.decide(c, "web")).customer_id for c in customers]

    result: list[str] = asyncio.run(go())
    return result


def test_each_decide_goes_to_its_customers_shard_and_not_to_a_router() -> None:
    shards = [FakeShard(0), FakeShard(1)]
    with routed(shards) as (frames, gateway, _):
        assert decide_all(frames, CUSTOMERS) == CUSTOMERS
    assert shards[0].seen == [c for c in CUSTOMERS if TABLE.shard_of(c) == 0]
    assert shards[1].seen == [c for c in CUSTOMERS if TABLE.shard_of(c) == 1]
    assert gateway.calls == [("routes", None)]  # asked once, then every Decide went direct


def test_a_shard_refuses_a_customer_it_does_not_own_and_the_router_answers() -> None:
    stale = FakeShard(0, table=PartitionTable([1] * 8))  # owns nobody any more
    with shard_servers([stale]) as [address], serving_both(GrpcConfig(frames_port=0)) as (
            _, frames, gateway):
        gateway.table, gateway.shard_addresses = TABLE, {0: address}
        assert decide_all(frames, ["c0"]) == ["c0"]
    assert stale.seen == []
    assert gateway.calls == [("routes", None), ("decide", "c0")]


def test_a_shard_that_is_gone_leaves_its_customers_to_the_routers() -> None:
    with serving_both(GrpcConfig(frames_port=0)) as (_, frames, gateway):
        gateway.table, gateway.shard_addresses = TABLE, {0: "127.0.0.1:1", 1: "127.0.0.1:1"}
        assert decide_all(frames, ["c0", "c1"]) == ["c0", "c1"]
    # c0's shard was unreachable: the routes go stale, are not asked again within a second,
    # and c1 goes through the router at once
    assert gateway.calls == [("routes", None), ("decide", "c0"), ("decide", "c1")]


def test_without_shard_servers_every_decide_goes_through_a_router() -> None:
    with serving_both(GrpcConfig(frames_port=0)) as (_, frames, gateway):
        assert decide_all(frames, ["c0", "c1"]) == ["c0", "c1"]
    assert gateway.calls == [("routes", None), ("decide", "c0"), ("decide", "c1")]


def test_a_shards_server_checks_the_edges_keys() -> None:
    shard = FakeShard(0, table=PartitionTable([0]))
    secured = GrpcConfig.model_validate({"frames_port": 0, "security": {"api_keys": KEYS}})
    with shard_servers([shard], secured) as [address], serving_both(secured) as (
            _, frames, gateway):
        gateway.table, gateway.shard_addresses = PartitionTable([0]), {0: address}
        assert decide_all(frames, ["c0"], api_key=KEY) == ["c0"]
        assert submit_all(frames, ["c1"], api_key=KEY)[0] == 1
        with pytest.raises(grpc.aio.AioRpcError) as info:
            decide_all(frames, ["c0"], api_key="wrong")

        async def submit_at_the_shard_with_a_wrong_key() -> None:
            channel = FramesChannel(address, None, None)
            try:
                await FramesStub(channel).SubmitPacked(
                    pb.PackedEvents(events=codec.pack(codec.EVENTS, [["e", "c2", "ping", 1,
                                                                      "", {}]])),
                    timeout=5, metadata=(("authorization", "Bearer wrong"),))
            finally:
                await channel.close()

        with pytest.raises(grpc.aio.AioRpcError) as at_shard:
            asyncio.run(submit_at_the_shard_with_a_wrong_key())
    assert info.value.code() == at_shard.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert (shard.seen, shard.taken) == (["c0"], [["c1"]])


def submit_all(frames: str, customers: list[str], **settings: Any) -> tuple[int, list[str]]:
    """Submit one event per customer in one batch: (accepted, the result's event ids)."""
    async def go() -> tuple[int, list[str]]:
        async with AsyncShushClient("127.0.0.1:1", frames_target=frames, timeout_s=5,
                                    max_attempts=3, backoff_s=0.01, **settings) as client:
            result = await client.submit_wire([[f"e-{c}", c, "ping", 1, "", {}]
                                               for c in customers])
            return result.accepted, result.event_ids

    result: tuple[int, list[str]] = asyncio.run(go())
    return result


def test_each_shards_share_of_a_submit_goes_to_that_shard_and_not_to_a_router() -> None:
    shards = [FakeShard(0), FakeShard(1)]
    with routed(shards) as (frames, gateway, _):
        accepted, event_ids = submit_all(frames, CUSTOMERS)
    assert (accepted, event_ids) == (8, [f"e-{c}" for c in CUSTOMERS])  # the batch's order
    assert shards[0].taken == [[c for c in CUSTOMERS if TABLE.shard_of(c) == 0]]
    assert shards[1].taken == [[c for c in CUSTOMERS if TABLE.shard_of(c) == 1]]
    assert gateway.calls == [("routes", None)]


def test_a_submit_a_shard_refuses_as_not_its_own_goes_through_a_router() -> None:
    stale = FakeShard(0, table=PartitionTable([1] * 8))  # owns nobody any more
    shard = FakeShard(1)
    with routed([stale, shard]) as (frames, gateway, _):
        assert submit_all(frames, CUSTOMERS)[0] == 8
    shard_0 = [c for c in CUSTOMERS if TABLE.shard_of(c) == 0]
    assert stale.taken == []
    assert shard.taken == [[c for c in CUSTOMERS if TABLE.shard_of(c) == 1]]
    assert [(kind, [e[1] for e in events]) for kind, events in gateway.calls[1:]] == [
        ("submit", shard_0)]  # after Routes: shard 0's share, once


def test_a_busy_shard_is_asked_again_and_not_bypassed() -> None:
    shard = FakeShard(0, table=PartitionTable([0]), busy=2)
    with shard_servers([shard]) as [address], serving_both(GrpcConfig(frames_port=0)) as (
            _, frames, gateway):
        gateway.table, gateway.shard_addresses = PartitionTable([0]), {0: address}
        assert submit_all(frames, ["c0", "c1"])[0] == 2
    assert (shard.busy, shard.taken) == (0, [["c0", "c1"]])
    assert gateway.calls == [("routes", None)]


def test_a_share_over_the_shards_request_limits_is_refused_and_nothing_is_taken() -> None:
    shards = [FakeShard(0), FakeShard(1)]
    limited = GrpcConfig(max_events_per_request=2)
    with shard_servers(shards, limited) as addresses, serving_both(
            GrpcConfig(frames_port=0)) as (_, frames, gateway):
        gateway.table, gateway.shard_addresses = TABLE, dict(enumerate(addresses))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            submit_all(frames, CUSTOMERS)  # 4 events for each shard
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at most 2" in (info.value.details() or "")
    assert (shards[0].taken, shards[1].taken) == ([], [])
    assert gateway.calls == [("routes", None)]  # refused for good: not sent on to a router


def test_a_submit_to_a_shard_that_is_gone_goes_through_a_router() -> None:
    with serving_both(GrpcConfig(frames_port=0)) as (_, frames, gateway):
        gateway.table, gateway.shard_addresses = TABLE, {0: "127.0.0.1:1", 1: "127.0.0.1:1"}
        assert submit_all(frames, CUSTOMERS)[0] == 8
    assert sorted(c for kind, events in gateway.calls if kind == "submit"
                  for c in (e[1] for e in events)) == CUSTOMERS


def test_a_client_told_not_to_reach_the_shards_sends_everything_through_the_routers() -> None:
    shards = [FakeShard(0), FakeShard(1)]
    with routed(shards) as (frames, gateway, _):
        assert submit_all(frames, CUSTOMERS, direct_to_shards=False)[0] == 8
        assert decide_all(frames, ["c0"], direct_to_shards=False) == ["c0"]
    assert (shards[0].taken, shards[1].taken, shards[0].seen, shards[1].seen) == ([], [], [], [])
    assert [kind for kind, _ in gateway.calls] == ["submit", "decide"]  # Routes not even asked


def test_routes_without_a_restarting_shard_are_asked_again_and_it_is_reached_directly(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "ROUTES_RETRY_S", 0.0)  # at once, not after 1 s
    shards = [FakeShard(0), FakeShard(1)]
    with routed(shards) as (frames, gateway, addresses):
        gateway.shard_addresses = {0: addresses[0]}  # 1 restarting

        async def go() -> None:
            async with AsyncShushClient("127.0.0.1:1", frames_target=frames,
                                        timeout_s=5) as client:
                await client.submit_wire([[f"a-{c}", c, "ping", 1, "", {}] for c in CUSTOMERS])
                gateway.shard_addresses = dict(enumerate(addresses))  # 1 serves again
                await client.submit_wire([[f"b-{c}", c, "ping", 1, "", {}] for c in CUSTOMERS])

        asyncio.run(go())
    shard_1 = [c for c in CUSTOMERS if TABLE.shard_of(c) == 1]
    assert [(kind, events and [e[1] for e in events]) for kind, events in gateway.calls] == [
        ("routes", None), ("submit", shard_1), ("routes", None)]
    assert shards[1].taken == [shard_1]  # the second batch's share, straight to shard 1
    assert len(shards[0].taken) == 2


def test_complete_routes_are_used_until_they_are_old() -> None:
    table = PartitionTable.round_robin(4, 2)
    assert ShardRoutes(table, {0: "a:1", 1: "b:2"}).max_age_s() == ROUTES_MAX_AGE_S
    assert ShardRoutes(table, {}).max_age_s() == ROUTES_MAX_AGE_S  # no shard serves: routers
    assert ShardRoutes(table, {0: "a:1"}).max_age_s() == ROUTES_RETRY_S < ROUTES_MAX_AGE_S


def test_a_wildcard_bind_is_advertised_at_a_reachable_address() -> None:
    assert advertised_host("127.0.0.1") == "127.0.0.1"
    assert advertised_host("shush-node-3") == "shush-node-3"
    assert advertised_host("0.0.0.0") not in ("0.0.0.0", "")
