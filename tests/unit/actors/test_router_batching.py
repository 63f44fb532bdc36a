"""The router's group commit, without Ray: a fake shard directory stands in for the shards."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from shush.actors.router import VALIDATE_CHUNK, RouterActorBody
from shush.engine import codec
from shush.engine.catalog import load_catalog
from shush.engine.config import EngineConfig, RouterConfig
from shush.engine.partitions import PartitionTable
from tests.factories import event, write_catalog


class HeldShard:
    """Records each batch and answers only when released."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []
        self.stamps: list[list[float | None]] = []
        self.partitions: list[list[int]] = []
        self.release = asyncio.Event()

    async def call(self, index: int, method: str, payload: bytes, stamps: list[float | None],
                   partitions: list[int], *, timeout_s: float) -> bytes:
        events = codec.unpack(payload, codec.EVENTS)
        self.batches.append(events)
        self.stamps.append(stamps)
        self.partitions.append(partitions)
        await self.release.wait()
        return codec.pack(codec.ACKS, [[codec.ACCEPTED, ""] for _ in events])


class Sink:
    def write(self, record: dict[str, Any]) -> None:
        pass


def _router(tmp_path: Path, **settings: Any) -> tuple[RouterActorBody, HeldShard]:
    config = EngineConfig(num_shards=1, router=RouterConfig(**settings))
    catalog = load_catalog([write_catalog(tmp_path)])
    router = RouterActorBody(0, config.model_dump_json(), catalog.to_wire(),
                             PartitionTable.round_robin(16, 1).to_wire(), Sink)
    shard = HeldShard()
    router.shards = shard  # type: ignore[assignment]
    return router, shard


def _batch(first: int, count: int) -> list[Any]:
    return [event(f"c{i}", "savings_withdrawal", event_id=f"e{i}", amount=10.0)
            for i in range(first, first + count)]


def test_events_buffered_while_the_window_is_full_leave_as_one_batch(tmp_path: Path) -> None:
    async def scenario() -> None:
        router, shard = _router(tmp_path, max_inflight_batches=1, flush_interval_ms=1.0)
        first = asyncio.create_task(router.submit_events(_batch(0, 3)))
        await asyncio.sleep(0.02)  # flushed: the window (1 batch) is now full
        later = [asyncio.create_task(router.submit_events(_batch(100 + 10 * k, 2)))
                 for k in range(4)]
        await asyncio.sleep(0.02)
        assert [len(b) for b in shard.batches] == [3]  # the others wait, buffered
        shard.release.set()
        replies = await asyncio.gather(first, *later)
        assert [len(b) for b in shard.batches] == [3, 8]  # four submits, one batch
        assert [len(r) for r in replies] == [3, 2, 2, 2, 2]
        assert router.buffered == 0
        # each batch carries its events per partition, the four submits' counts summed
        table = PartitionTable.round_robin(16, 1)
        for batch, flat in zip(shard.batches, shard.partitions, strict=True):
            expected: dict[int, int] = {}
            for e in batch:
                expected[table.partition(e[1])] = expected.get(table.partition(e[1]), 0) + 1
            assert codec.counts_from_flat(flat, len(batch)) == expected

    asyncio.run(scenario())


def test_a_backlog_is_cut_into_batches_of_at_most_max_batch_events(tmp_path: Path) -> None:
    async def scenario() -> None:
        router, shard = _router(tmp_path, max_inflight_batches=2, max_batch_events=5,
                                flush_interval_ms=1.0)
        shard.release.set()
        replies = await asyncio.gather(*(router.submit_events(_batch(10 * k, 3)) for k in range(6)))
        assert sum(len(b) for b in shard.batches) == 18
        assert max(len(b) for b in shard.batches) <= 5
        assert [len(r) for r in replies] == [3] * 6

    asyncio.run(scenario())


def test_a_failing_delivery_answers_every_caller_with_retry(tmp_path: Path) -> None:
    class BrokenShard(HeldShard):
        async def call(self, index: int, method: str, payload: bytes,
                       stamps: list[float | None], partitions: list[int], *,
                       timeout_s: float) -> bytes:
            raise RuntimeError("boom")

    async def scenario() -> None:
        router, _ = _router(tmp_path, flush_interval_ms=1.0)
        router.shards = BrokenShard()  # type: ignore[assignment]
        acks = await router.submit_events(_batch(0, 2))
        assert [a[0] for a in acks] == [codec.RETRY, codec.RETRY]
        assert "boom" in acks[0][1]

    asyncio.run(scenario())


def test_by_default_a_chunk_leaves_at_once_while_the_window_has_room(tmp_path: Path) -> None:
    async def scenario() -> None:
        router, shard = _router(tmp_path, max_inflight_batches=2)
        first = asyncio.create_task(router.submit_events(_batch(0, 3)))
        second = asyncio.create_task(router.submit_events(_batch(10, 2)))
        third = asyncio.create_task(router.submit_events(_batch(20, 4)))
        await asyncio.sleep(0)  # no flush timer: sent on their first turn
        await asyncio.sleep(0)
        assert [len(b) for b in shard.batches] == [3, 2]  # the window's two batches
        assert not router._timers
        shard.release.set()
        await asyncio.gather(first, second, third)
        assert [len(b) for b in shard.batches] == [3, 2, 4]  # the third when one was acked

    asyncio.run(scenario())


def test_a_batch_carries_when_its_oldest_submit_was_sent_taken_in_and_sent_on(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        router, shard = _router(tmp_path, max_inflight_batches=1)
        first = asyncio.create_task(router.submit_events(_batch(0, 3), 1000.0))
        await asyncio.sleep(0.02)
        before = time.time()
        later = [asyncio.create_task(router.submit_events(_batch(100 + 10 * k, 2), 2000.0 + k))
                 for k in range(2)]
        await asyncio.sleep(0.02)
        shard.release.set()
        await asyncio.gather(first, *later)
        assert [len(b) for b in shard.batches] == [3, 4]
        (sent, taken, left), (sent_2, taken_2, left_2) = shard.stamps
        assert sent == 1000.0 and taken is not None and left is not None and taken <= left
        # the merged batch is stamped with its oldest submit: sent at 2000, taken in after
        # ``before``, and sent on once the window freed, after the first batch's ack
        assert sent_2 == 2000.0 and taken_2 is not None and left_2 is not None
        assert before <= taken_2 <= left_2
        unstamped = asyncio.create_task(router.submit_events(_batch(200, 1)))
        await asyncio.wait_for(unstamped, 1)
        assert shard.stamps[-1][0] is None

    asyncio.run(scenario())


def test_other_calls_get_the_loop_while_a_large_request_is_validated(tmp_path: Path) -> None:
    async def scenario() -> None:
        router, shard = _router(tmp_path)
        shard.release.set()
        seen: list[int] = []

        async def inbound_decide() -> None:  # arrives just after the request
            seen.append(router.buffered)
            seen.append(sum(router._inflight.values()))  # batches sent so far

        submit = asyncio.create_task(router.submit_events(_batch(0, 4 * VALIDATE_CHUNK)))
        await asyncio.sleep(0)  # the request starts validating
        decide = asyncio.create_task(inbound_decide())
        await asyncio.gather(submit, decide)
        # it ran mid-request: before any event was routed, and counted as buffered already
        assert seen == [4 * VALIDATE_CHUNK, 0]
        assert router.buffered == 0

    asyncio.run(scenario())
