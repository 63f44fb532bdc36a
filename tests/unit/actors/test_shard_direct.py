"""A client's submit straight to its shard (``take_direct``), without Ray: the router's checks
done by the shard, and what refuses a whole share."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import msgpack
import pytest

from shush.engine import codec
from shush.engine.config import EngineConfig
from shush.engine.errors import BackpressureError, EngineUnavailable, WrongShard
from shush.engine.partitions import PartitionTable
from tests.factories import event
from tests.unit.actors.test_shard_turns import _shard


def _withdrawals(*customers: str) -> list[list[object]]:
    now = int(time.time() * 1000)
    return [event(c, "savings_withdrawal", now, amount=10.0) for c in customers]


def test_a_direct_share_is_checked_journaled_and_applied_in_order(tmp_path: Path) -> None:
    async def scenario() -> None:
        shard, arbitration, _ = _shard(tmp_path)
        arbitration.release.set()
        a, b = _withdrawals("a", "b")
        bad = ["e-bad", *a[1:5], {"amount": "lots"}]
        acks = await shard.take_direct([a, bad, b], codec.pack(codec.EVENTS, [a, bad, b]),
                                       time.time())
        assert [ack[0] for ack in acks] == [codec.ACCEPTED, codec.REJECTED, codec.ACCEPTED]
        assert acks[1][2] == "attributes.amount"
        # journaled without the refused event (not the client's bytes, which hold it)
        [entry] = shard.core.store.read_journal()
        assert [e[0] for e in msgpack.unpackb(entry.data)] == [a[0], b[0]]
        [dead] = shard.core.store.read_dead_letters(10)
        assert msgpack.unpackb(dead.payload)["stage"] == "shard edge"
        assert set(shard.core.customers) == {"a", "b"}
        assert shard.events_direct == 3

    asyncio.run(scenario())


def test_a_share_with_another_shards_customer_is_refused_whole(tmp_path: Path) -> None:
    async def scenario() -> None:
        shard, _, _ = _shard(tmp_path)
        shard.table = PartitionTable([1] * shard.table.num_partitions)  # owns nobody now
        with pytest.raises(WrongShard):
            await shard.take_direct(_withdrawals("a"), None, time.time())
        assert shard.core.store.read_journal() == [] and not shard.core.customers

    asyncio.run(scenario())


def test_a_fenced_shard_sends_the_client_to_a_router(tmp_path: Path) -> None:
    async def scenario() -> None:
        shard, _, _ = _shard(tmp_path)
        shard.fenced = True
        with pytest.raises(EngineUnavailable, match="newer incarnation"):
            await shard.take_direct(_withdrawals("a"), None, time.time())

    asyncio.run(scenario())


def test_past_max_queued_events_a_share_is_refused_with_a_retry_after(
        tmp_path: Path) -> None:
    config = EngineConfig.model_validate({"num_shards": 1,
                                          "shard": {"max_queued_events": 3}})

    async def scenario() -> None:
        shard, arbitration, _ = _shard(tmp_path, config=config)
        arbitration.release.set()
        await shard._batches.acquire()  # the shard is busy with a batch
        first = asyncio.create_task(shard.take_direct(_withdrawals("a", "b"), None,
                                                      time.time()))
        await asyncio.sleep(0.01)
        assert shard.queued_events == 2
        with pytest.raises(BackpressureError, match="2 events waiting") as info:
            await shard.take_direct(_withdrawals("c", "d"), None, time.time())
        assert info.value.retry_after_s > 0
        shard._batches.release()
        assert [ack[0] for ack in await first] == [codec.ACCEPTED] * 2
        assert shard.queued_events == 0
        # nothing waits now: a share larger than the bound is still taken
        acks = await shard.take_direct(_withdrawals("c", "d", "e", "f"), None, time.time())
        assert [ack[0] for ack in acks] == [codec.ACCEPTED] * 4

    asyncio.run(scenario())
