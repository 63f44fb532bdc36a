"""The shard's turns, without Ray: nothing waits on arbitration but the customers it decides."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from shush.actors.shard import ShardActorBody
from shush.actors.way_in import WayIn
from shush.adapters.channels.memory import MemoryChannel
from shush.adapters.stores import MemoryStateStore
from shush.engine import codec
from shush.engine.arbitration import ActionTable, arbitrate
from shush.engine.catalog import load_catalog
from shush.engine.config import EngineConfig
from shush.engine.partitions import PartitionTable
from shush.engine.propensity import PropensityModel
from tests.factories import event, with_budgets, write_catalog


class HeldArbitration:
    """Real P×C×V×L scoring, answered only when released."""

    def __init__(self, table: ActionTable, model: PropensityModel) -> None:
        self.table, self.model = table, model
        self.release = asyncio.Event()
        self.waiting = 0
        self.reports: list[dict[str, Any]] = []  # what each arbitrate call carried along

    async def call(self, index: int, method: str, *args: Any, timeout_s: float) -> Any:
        if method != "arbitrate":
            return None
        self.waiting += 1
        await self.release.wait()
        self.waiting -= 1
        sets, meta = codec.decode_candidate_batch(args[0])
        self.reports.append(meta)
        return codec.encode_verdicts(arbitrate(sets, self.table, self.model.mean()))


def _shard(tmp_path: Path, catalog_data: dict[str, Any] | None = None,
           config: EngineConfig | None = None
           ) -> tuple[ShardActorBody, HeldArbitration, MemoryChannel]:
    catalog = load_catalog([write_catalog(tmp_path, catalog_data)])
    config = config or EngineConfig(num_shards=1)
    channel = MemoryChannel()
    shard = ShardActorBody(0, config.model_dump_json(), catalog.to_wire(),
                           PartitionTable.round_robin(config.num_partitions, 1).to_wire(),
                           lambda: channel, MemoryStateStore)
    table = ActionTable(catalog.actions)
    arbitration = HeldArbitration(table, PropensityModel(table.ids, catalog.actions))
    shard.arbitrators = arbitration  # type: ignore[assignment]
    return shard, arbitration, channel


def _withdrawal(customer: str) -> bytes:
    now = int(time.time() * 1000)
    return codec.pack(codec.EVENTS, [event(customer, "savings_withdrawal", now, amount=7000.0)])


def test_batches_and_other_customers_do_not_wait_for_a_decision_in_flight(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        shard, arbitration, channel = _shard(tmp_path)
        await shard.submit(_withdrawal("x"))  # x awaits a decision; the decider takes it
        while not arbitration.waiting:
            await asyncio.sleep(0.001)
        assert "x" in shard._in_decision
        # a batch for x and a Decide for y go through while x's arbitration is pending
        acks = codec.unpack(await asyncio.wait_for(shard.submit(_withdrawal("x")), 1),
                            codec.ACKS)
        assert acks[0][0] == codec.ACCEPTED
        decide_x = asyncio.create_task(shard.decide("x", None))
        decide_y = asyncio.create_task(shard.decide("y", None))
        await asyncio.sleep(0.01)
        assert arbitration.waiting == 2 and not decide_x.done()  # y arbitrates; x waits
        arbitration.release.set()
        await asyncio.wait_for(asyncio.gather(decide_x, decide_y), 2)
        assert {t.customer_id for t in channel.sent} == {"x"}  # a Decide sends nothing
        assert not shard._in_decision

    asyncio.run(scenario())


def test_budget_settlements_ride_along_with_the_next_arbitration(tmp_path: Path) -> None:
    budgets = {"advisor_call": 100, "rate_offer": 100, "card_upgrade": 100}

    async def scenario() -> None:
        shard, arbitration, channel = _shard(tmp_path, with_budgets(budgets))
        arbitration.release.set()
        await shard.submit(_withdrawal("x"))
        while not channel.sent:
            await asyncio.sleep(0.001)
        [treatment] = channel.sent
        assert arbitration.reports[0]["settled"] == []  # nothing fired before the first round
        await shard.decide("y", None)  # the next call carries x's settled reservation
        assert arbitration.reports[-1]["settled"] == [[treatment.idempotency_key, True]]
        # y's Decide only asked: its winner's reservation goes back with the next call
        assert shard.core.budget_settled == [["y|card_upgrade|inbound", False]]

    asyncio.run(scenario())


def test_the_arbitrator_takes_what_rides_along_before_scoring(tmp_path: Path) -> None:
    from shush.actors.arbitration import ArbitrationActorBody
    from shush.engine.arbitration import CandidateSet

    catalog = load_catalog([write_catalog(tmp_path)])
    body = ArbitrationActorBody(0, EngineConfig().model_dump_json(), catalog.to_wire(),
                                MemoryStateStore)
    action = next(iter(catalog.actions))
    cset = CandidateSet("x", (action,), (1.0,), ("m1",))
    reply = asyncio.run(body.arbitrate(codec.encode_candidate_sets(
        [cset], learned=[[action, 0, True], [action, 0, False], ["gone", 0, True]],
        settled=[["some-key", False]])))
    assert body.learned == 2  # the unknown action is left out
    assert [v.customer_id for v in codec.decode_verdict_batch(reply)[0]] == ["x"]


def test_a_turn_up_to_the_local_limit_is_scored_by_the_replica_a_larger_one_remotely(
        tmp_path: Path) -> None:
    from shush.actors.arbitration import ArbitrationActorBody
    from shush.actors.shard import LOCAL_SCORING_MAX_SETS

    async def scenario() -> None:
        shard, arbitration, channel = _shard(tmp_path)
        arbitration.release.set()
        master = ArbitrationActorBody(0, EngineConfig().model_dump_json(),
                                      load_catalog([write_catalog(tmp_path)]).to_wire(),
                                      MemoryStateStore)
        shard.core.load_replica(await master.replica(""))
        now = int(time.time() * 1000)
        for size, remote_calls in ((LOCAL_SCORING_MAX_SETS, 0), (LOCAL_SCORING_MAX_SETS + 1, 1)):
            customers = [f"c{size}-{i}" for i in range(size)]
            shard.core.apply_events([event(c, "savings_withdrawal", now, amount=7000.0)
                                     for c in customers])
            shard.core.take_awaiting()
            assert await shard._decide_turn(customers, "triggered")
            assert len(arbitration.reports) == remote_calls
        assert len(channel.sent) == 2 * LOCAL_SCORING_MAX_SETS + 1

    asyncio.run(scenario())


def test_while_batches_queue_a_decision_round_waits_for_more_customers(
        tmp_path: Path, monkeypatch: Any) -> None:
    """Four batches sent at once queue for the shard: one round decides all four triggers,
    when the queue ends, however long the hold. One batch at a time gets a round each; so
    does a queue once the hold has passed."""
    import shush.actors.shard as shard_module

    async def rounds(batches_at_once: int) -> tuple[int, int]:
        shard, arbitration, channel = _shard(tmp_path)
        arbitration.release.set()
        settles = 0
        settle = shard.core.settle

        def counted(*args: Any, **kwargs: Any) -> Any:
            nonlocal settles
            settles += 1
            return settle(*args, **kwargs)

        shard.core.settle = counted  # type: ignore[method-assign]
        customers = [f"q{batches_at_once}-{i}" for i in range(4)]
        for at in range(0, 4, batches_at_once):
            await asyncio.gather(*(shard.submit(_withdrawal(c))
                                   for c in customers[at:at + batches_at_once]))
        deadline = time.monotonic() + 2
        while len(channel.sent) < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
        return settles, len({t.customer_id for t in channel.sent})

    monkeypatch.setattr(shard_module, "DECISION_HOLD_S", 60.0)  # the queue's end decides
    assert asyncio.run(rounds(4)) == (1, 4)
    assert asyncio.run(rounds(1)) == (4, 4)
    monkeypatch.setattr(shard_module, "DECISION_HOLD_S", 0.0)
    assert asyncio.run(rounds(4)) == (4, 4)


def test_a_decide_is_answered_between_chunks_of_a_snapshot_step(tmp_path: Path) -> None:
    from shush.actors.shard import SNAPSHOT_PACK_CHUNK

    async def scenario() -> None:
        shard, arbitration, _ = _shard(tmp_path)
        arbitration.release.set()
        now = int(time.time() * 1000)
        await shard.submit(codec.pack(codec.EVENTS, [
            event(f"c{i}", "balance_update", now, balance=500.0)
            for i in range(3 * SNAPSHOT_PACK_CHUNK)]))
        persistence = shard.persistence
        persistence.due_partitions = lambda: list(persistence.dirty)  # type: ignore[method-assign]
        pack_rows = persistence.pack_rows
        packed_before_decide: list[int] = []

        def counting(step: Any, *args: Any) -> bool:
            done = pack_rows(step, *args)
            packed_before_decide.append(len(step.rows))
            return done

        persistence.pack_rows = counting  # type: ignore[method-assign]
        snapshotting = asyncio.create_task(shard._snapshot_step())
        while not packed_before_decide:  # the step takes the lock and packs a first chunk
            await asyncio.sleep(0)
        await shard.decide("y", None)
        seen = list(packed_before_decide)
        await snapshotting
        assert seen and seen[-1] < 3 * SNAPSHOT_PACK_CHUNK  # answered mid-step
        assert persistence.stats["snapshot_rows"] == 3 * SNAPSHOT_PACK_CHUNK

    asyncio.run(scenario())


def test_health_shows_each_stage_of_the_way_in_of_batches_and_decides(tmp_path: Path) -> None:
    async def scenario() -> None:
        shard, arbitration, _ = _shard(tmp_path)
        arbitration.release.set()
        now = time.time()
        await shard.submit(_withdrawal("x"), [now - 0.003, now - 0.002, now - 0.001])
        await shard.submit(_withdrawal("y"))  # from a caller that does not stamp: not counted
        await shard.decide("z", None, False, time.time() - 0.002)
        steps = (await shard.health())["way_in"]["steps"]
        assert set(steps) == {*WayIn.BATCH_STAGES, *WayIn.DECIDE_STAGES}
        assert all(sum(stage["counts"]) == 1 for stage in steps.values())
        assert steps["gateway → applied"]["total_ms"] >= 3.0
        assert steps["decide: gateway → shard"]["total_ms"] >= 2.0

    asyncio.run(scenario())


def test_timers_fire_while_a_snapshot_round_waits_for_the_batch_lock(tmp_path: Path) -> None:
    """Timers have a loop of their own: maintenance (snapshot steps, each taking the batch
    lock behind queued batches) can be held up for long without holding them up."""
    async def scenario() -> None:
        shard, _, _ = _shard(tmp_path, config=EngineConfig(num_shards=1,
                                                           shard={"timer_tick_s": 0.01}))
        await shard.submit(_withdrawal("x"))  # starts the background loops
        async with shard._batches:  # a long batch, or a snapshot round behind queued ones
            before = sum(shard.steps.counts.get("timers", ()))
            await asyncio.sleep(0.2)
            assert sum(shard.steps.counts.get("timers", ())) >= before + 5
        shard.fenced = True  # the loops end

    asyncio.run(scenario())


def test_a_long_snapshot_round_passivates_between_its_steps(tmp_path: Path) -> None:
    """A round of many steps passivates before the first and again between steps once a
    tick has passed: memory stays within its bound however long the round takes."""
    async def scenario() -> None:
        shard, arbitration, _ = _shard(tmp_path)
        arbitration.release.set()
        now = int(time.time() * 1000)
        await shard.submit(codec.pack(codec.EVENTS, [
            event(f"c{i}", "balance_update", now, balance=500.0) for i in range(600)]))
        persistence = shard.persistence
        persistence.due_partitions = lambda: list(persistence.dirty)  # type: ignore[method-assign]
        calls: list[str] = []
        passivate, pack_rows = shard.core.passivate, persistence.pack_rows

        def counting_passivate(*args: Any) -> int:
            calls.append("passivate")
            return passivate(*args)

        def packing(step: Any, *args: Any) -> bool:
            if not step.rows:
                calls.append("step")
            shard._passivate_due = 0.0  # as if a tick passed while it packs
            return pack_rows(step, *args)

        shard.core.passivate = counting_passivate  # type: ignore[method-assign]
        persistence.pack_rows = packing  # type: ignore[method-assign]
        await shard._snapshot_step()
        steps = calls.count("step")
        assert steps >= 3  # 600 changed customers, at most 256 a step
        assert calls == ["passivate", "step"] + ["passivate", "step"] * (steps - 1)
        assert persistence.stats["snapshot_rows"] == 600

    asyncio.run(scenario())


def test_a_shard_behind_on_snapshots_catches_up_before_its_next_batch(tmp_path: Path) -> None:
    """Past ``max_replay_events`` unsaved events a batch first waits for a snapshot step of
    the partitions with most to replay: what a restart replays stays bounded under load."""
    async def scenario() -> None:
        shard, _, _ = _shard(tmp_path, config=EngineConfig(num_shards=1,
                                                           shard={"max_replay_events": 100}))
        now = int(time.time() * 1000)
        backlog = []
        for k in range(8):
            await shard.submit(codec.pack(codec.EVENTS, [
                event(f"b{k}-{i}", "balance_update", now, balance=500.0) for i in range(60)]))
            backlog.append(shard.persistence.unsaved_events)
        assert max(backlog) <= 100 + 60  # never more than the bound and one batch
        assert shard.persistence.stats["catch_ups"] >= 3
        assert shard.persistence.stats["snapshot_rows"] >= 8 * 60 - max(backlog)
        shard.fenced = True

    asyncio.run(scenario())
