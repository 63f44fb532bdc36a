"""Decide straight to the customer's shard: the shards' frames Decide servers, ``Routes``, and
the client's choice between a shard and the routers.

Real frames servers on a loop in a thread: the routers' edge in front of a fake gateway, each
shard's Decide server in front of a fake shard that records what it was asked.
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

from shush.adapters.client import AsyncShushClient
from shush.adapters.frames.shard_edge import ShardDecideServer, advertised_host
from shush.adapters.grpc.auth import hash_key
from shush.engine import codec
from shush.engine.arbitration import Verdict
from shush.engine.config import EngineConfig, GrpcConfig
from shush.engine.partitions import PartitionTable
from tests.unit.adapters.grpc_fakes import serving_both

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

    def shard_of(self, customer_id: str) -> int:
        return self.table.shard_of(customer_id)

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
    """Each shard's Decide server; yield their addresses."""
    config = EngineConfig.model_validate({"grpc": (grpc_config or GrpcConfig()).model_dump()})
    loop = LoopThread()
    servers = [ShardDecideServer(config, shard) for shard in shards]
    try:
        yield [loop.run(server.start()) for server in servers]
    finally:
        for server in servers:
            loop.run(server.stop(0.1))
        loop.close()


def decide_all(frames: str, customers: list[str], **settings: Any) -> list[str]:
    async def go() -> list[str]:
        async with AsyncShushClient("127.0.0.1:1", frames_target=frames, timeout_s=5,
                                    max_attempts=1, **settings) as client:
            return [(await client.decide(c, "web")).customer_id for c in customers]

    result: list[str] = asyncio.run(go())
    return result


def test_each_decide_goes_to_its_customers_shard_and_not_to_a_router() -> None:
    shards = [FakeShard(0), FakeShard(1)]
    with shard_servers(shards) as addresses, serving_both(GrpcConfig(frames_port=0)) as (
            _, frames, gateway):
        gateway.table, gateway.decide_addresses = TABLE, dict(enumerate(addresses))
        assert decide_all(frames, CUSTOMERS) == CUSTOMERS
    assert shards[0].seen == [c for c in CUSTOMERS if TABLE.shard_of(c) == 0]
    assert shards[1].seen == [c for c in CUSTOMERS if TABLE.shard_of(c) == 1]
    assert gateway.calls == [("routes", None)]  # asked once, then every Decide went direct


def test_a_shard_refuses_a_customer_it_does_not_own_and_the_router_answers() -> None:
    stale = FakeShard(0, table=PartitionTable([1] * 8))  # owns nobody any more
    with shard_servers([stale]) as [address], serving_both(GrpcConfig(frames_port=0)) as (
            _, frames, gateway):
        gateway.table, gateway.decide_addresses = TABLE, {0: address}
        assert decide_all(frames, ["c0"]) == ["c0"]
    assert stale.seen == []
    assert gateway.calls == [("routes", None), ("decide", "c0")]


def test_a_shard_that_is_gone_leaves_its_customers_to_the_routers() -> None:
    with serving_both(GrpcConfig(frames_port=0)) as (_, frames, gateway):
        gateway.table, gateway.decide_addresses = TABLE, {0: "127.0.0.1:1", 1: "127.0.0.1:1"}
        assert decide_all(frames, ["c0", "c1"]) == ["c0", "c1"]
    # c0's shard was unreachable: the routes go stale, are not asked again within a second,
    # and c1 goes through the router at once
    assert gateway.calls == [("routes", None), ("decide", "c0"), ("decide", "c1")]


def test_without_decide_servers_every_decide_goes_through_a_router() -> None:
    with serving_both(GrpcConfig(frames_port=0)) as (_, frames, gateway):
        assert decide_all(frames, ["c0", "c1"]) == ["c0", "c1"]
    assert gateway.calls == [("routes", None), ("decide", "c0"), ("decide", "c1")]


def test_a_shards_decide_server_checks_the_edges_keys() -> None:
    shard = FakeShard(0, table=PartitionTable([0]))
    secured = GrpcConfig.model_validate({"frames_port": 0, "security": {"api_keys": KEYS}})
    with shard_servers([shard], secured) as [address], serving_both(secured) as (
            _, frames, gateway):
        gateway.table, gateway.decide_addresses = PartitionTable([0]), {0: address}
        assert decide_all(frames, ["c0"], api_key=KEY) == ["c0"]
        with pytest.raises(grpc.aio.AioRpcError) as info:
            decide_all(frames, ["c0"], api_key="wrong")
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert shard.seen == ["c0"]


def test_a_wildcard_bind_is_advertised_at_a_reachable_address() -> None:
    assert advertised_host("127.0.0.1") == "127.0.0.1"
    assert advertised_host("shush-node-3") == "shush-node-3"
    assert advertised_host("0.0.0.0") not in ("0.0.0.0", "")
