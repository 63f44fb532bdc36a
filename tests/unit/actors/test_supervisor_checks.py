"""The supervisor's health check, driven without Ray: it asks each actor what it serves, and
asks only those that serve nothing to serve again."""

from __future__ import annotations

import asyncio
from typing import Any

from shush.actors.ports import EdgePorts
from shush.actors.supervisor import SupervisorActorBody
from shush.adapters.stores import MemoryStateStore
from shush.engine.config import EngineConfig

PORTS = EdgePorts(grpc=50051, frames=None)


class _Method:
    def __init__(self, actor: FakeActor, name: str) -> None:
        self.actor, self.name = actor, name

    def remote(self, *args: Any) -> Any:
        self.actor.calls.append(self.name)
        return self.actor.answer(self.name, *args)


class FakeActor:
    """An actor handle whose ``serving`` answers what it was told to serve."""

    def __init__(self, serves: Any, *, address: str | None = None,
                 restarting: bool = False) -> None:
        self.serves = serves
        self.address = address  # what serve_clients hands out
        self.restarting = restarting  # Ray is restarting it: no answer yet
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> _Method:
        return _Method(self, name)

    async def answer(self, name: str, *args: Any) -> Any:
        if self.restarting:
            raise TimeoutError
        if name == "serve":
            self.serves = args[0]
        elif name == "serve_clients":
            self.serves = self.address
        return self.serves


def supervisor(*, shard_server: bool = True) -> SupervisorActorBody:
    body = SupervisorActorBody(EngineConfig().model_dump_json(), {}, None, None,
                               MemoryStateStore,
                               shard_server_factory=object() if shard_server else None)
    body.arbitrators = [FakeActor(None)]
    body.edge_ports = PORTS
    return body


def test_only_what_serves_nothing_is_asked_to_serve() -> None:
    body = supervisor()
    restarted_router, restarted_shard = FakeActor(None), FakeActor(None, address="h:7002")
    body.routers = [FakeActor(PORTS), restarted_router]
    body.shards = [FakeActor("h:7001"), restarted_shard]

    assert asyncio.run(body.check_once()) == {"arbitration": 0, "shard": 0, "router": 0}
    assert [a.calls for a in body.routers] == [["serving"], ["serving", "serve"]]
    assert [a.calls for a in body.shards] == [["serving"], ["serving", "serve_clients"]]
    assert body.shard_addresses == {0: "h:7001", 1: "h:7002"}

    for actor in [*body.routers, *body.shards]:
        actor.calls.clear()
    asyncio.run(body.check_once())  # everything serves: one cheap call each
    assert [a.calls for a in [*body.routers, *body.shards]] == [["serving"]] * 4


def test_a_shard_serving_at_a_new_address_is_routed_there() -> None:
    body = supervisor()
    body.routers = [FakeActor(PORTS)]
    body.shards = [FakeActor("h:7009")]
    body.shard_addresses = {0: "h:7001"}
    asyncio.run(body.check_once())
    assert body.shard_addresses == {0: "h:7009"}


def test_without_shard_servers_no_shard_is_asked() -> None:
    body = supervisor(shard_server=False)
    body.routers = [FakeActor(PORTS)]
    body.shards = [FakeActor(None)]
    asyncio.run(body.check_once())
    assert body.shards[0].calls == ["serving"]
    assert body.shard_addresses == {}


def test_a_restarting_shard_leaves_the_routes_until_it_serves_again() -> None:
    body = supervisor()
    body.routers = [FakeActor(PORTS)]
    body.shards = [FakeActor("h:7001"), FakeActor(None, address="h:7003", restarting=True)]
    body.shard_addresses = {0: "h:7001", 1: "h:7002"}
    asyncio.run(body.check_once())
    assert body.shard_addresses == {0: "h:7001"}  # its clients go through the routers
    assert body.shards[1].calls == ["serving"]  # not asked to serve while it recovers
    body.shards[1].restarting = False
    asyncio.run(body.check_once())
    assert body.shard_addresses == {0: "h:7001", 1: "h:7003"}
