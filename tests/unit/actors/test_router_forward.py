"""A request the client split by shard (``RouterActorBody.forward``), without Ray: handed to
its shard unopened, or routed by the router itself when the client's routes are stale."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from shush.actors.router import RouterActorBody
from shush.engine import codec
from shush.engine.catalog import load_catalog
from shush.engine.config import EngineConfig
from shush.engine.errors import EngineUnavailable, RequestRejected, ShushError, WrongShard
from shush.engine.partitions import PartitionTable
from tests.factories import event, write_catalog
from tests.unit.actors.test_router_batching import Sink


class Shards:
    """Two shards: ``submit_packed`` answers ``refusal`` when one is set, else what a shard
    that took every event would; ``submit`` (the router's own batches) takes them all."""

    def __init__(self, refusal: ShushError | None = None) -> None:
        self.refusal = refusal
        self.calls: list[tuple[int, str, Any]] = []

    async def call(self, index: int, method: str, payload: bytes, *args: Any,
                   timeout_s: float) -> Any:
        self.calls.append((index, method, payload))
        if method == "submit_packed":
            if self.refusal is not None:
                raise self.refusal
            events = codec.unpack(payload, codec.EVENTS)
            return codec.ack_summary(events, [[codec.ACCEPTED, ""]] * len(events))
        events = codec.unpack(payload, codec.EVENTS)
        return codec.pack(codec.ACKS, [[codec.ACCEPTED, ""] for _ in events])


def _router(tmp_path: Path, shards: Shards) -> RouterActorBody:
    config = EngineConfig(num_shards=2)
    router = RouterActorBody(0, config.model_dump_json(),
                             load_catalog([write_catalog(tmp_path)]).to_wire(),
                             PartitionTable.round_robin(16, 2).to_wire(), Sink)
    router.shards = shards  # type: ignore[assignment]
    return router


def _payload(*customers: str) -> bytes:
    return codec.pack(codec.EVENTS, [event(c, "savings_withdrawal", event_id=f"e-{c}",
                                           amount=10.0) for c in customers])


def test_a_split_request_reaches_its_shard_as_the_client_packed_it(tmp_path: Path) -> None:
    shards = Shards()
    router = _router(tmp_path, shards)
    payload = _payload("a", "b", "c")
    summary = asyncio.run(router.forward(1, payload, time.time()))
    assert summary == [[3, 0, 0, 0], []]
    assert shards.calls == [(1, "submit_packed", payload)]  # the same bytes, unopened
    assert router.stats["forwarded"] == 3 and router.stats["received"] == 0


@pytest.mark.parametrize("refusal", [
    WrongShard("a", owner=0, shard=1),
    EngineUnavailable("lane lost", what="shard-1"),
])
def test_stale_routes_or_an_unreachable_shard_take_the_routers_own_way(
        tmp_path: Path, refusal: ShushError) -> None:
    shards = Shards(refusal)
    router = _router(tmp_path, shards)
    customers = [f"c{i}" for i in range(8)]
    summary = asyncio.run(router.forward(1, _payload(*customers), time.time()))
    assert summary == [[8, 0, 0, 0], []]
    table = router.table
    routed = {index for index, method, _ in shards.calls[1:]}
    assert [m for _, m, _ in shards.calls[1:]] == ["submit"] * len(routed)
    assert routed == {table.shard_of(c) for c in customers}  # each to its real owner
    assert router.stats["rerouted"] == 1 and router.stats["received"] == 8


def test_a_shard_that_does_not_exist_is_named(tmp_path: Path) -> None:
    router = _router(tmp_path, Shards())
    with pytest.raises(RequestRejected, match="no shard 2: this engine has shards 0 to 1") as info:
        asyncio.run(router.forward(2, _payload("a"), time.time()))
    assert info.value.field == "shard"


def test_a_malformed_request_the_shard_could_not_take_is_refused_whole(tmp_path: Path) -> None:
    router = _router(tmp_path, Shards(EngineUnavailable("lane lost")))
    with pytest.raises(RequestRejected, match="undecodable") as info:
        asyncio.run(router.forward(0, b"\xc1", time.time()))
    assert info.value.field == "events"
