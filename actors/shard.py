"""ShardActor: the Ray shell hosting many customer actors (see ``shard_core.ShardCore``).

Everything runs on the actor's one event loop, and no state is touched across an ``await``:
each step below is a synchronous turn, so turns never interleave. Batches (from routers, or
from clients straight through the shard's own frames server) apply in arrival order (one at
a time): journaled whole, then applied ``turn_events`` events per turn; between
turns an inbound Decide, a decision round, timers or the sweep get the loop, so a large batch
never holds them up (snapshots wait for the batch: they truncate the journal). A customer has
at most one decision in flight — from candidates through arbitration (the only remote wait) to
settling — so contact history is never read by two decisions at once. On start (and on every
Ray restart) the shard acquires its partitions and rebuilds its customers from the store; a
background task snapshots changed customers and retries failed sends from the outbox.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Collection
from typing import Any

import ray

from ..engine import codec
from ..engine.arbitration import CandidateSet, Verdict
from ..engine.catalog import Catalog
from ..engine.clock import make_clock
from ..engine.config import EngineConfig
from ..engine.errors import BackpressureError, CodecError, EngineUnavailable, FencedError
from ..engine.models import Removal
from ..engine.partitions import PartitionTable
from ..engine.runs import EmergencyRun
from ..engine.signals import admit_events
from . import gil, heap, ray_calls
from .lanes import ARBITRATOR_LANE_METHODS, SHARD_LANE_METHODS, ActorLanes, LaneHost
from .ports import ChannelFactory, ShardServer, ShardServerFactory, StoreFactory
from .shard_always_on import ShardAlwaysOn
from .shard_core import ShardCore
from .shard_persistence import ShardPersistence
from .step_times import StepTimes
from .way_in import WayIn

log = logging.getLogger(__name__)
# A snapshot step is one write transaction of at most this many partitions and about this many
# changed customers (~25 µs each to pack): each transaction takes SQLite's database-wide write
# lock, which the other shards then wait for, so steps are few; and a step holds up every call
# to the shard, so they are short (a step of 128 partitions after a burst of new customers
# held the shard for 170 ms, and an inbound Decide with it).
SNAPSHOT_PARTITIONS_PER_STEP = 128
SNAPSHOT_CUSTOMERS_PER_STEP = 256
# Customers packed between two looks at other calls: packing a step of 256 took the loop
# p50 6.5 ms (p99 22 ms) at 4,000 events/s on a slow day, and more as customers' histories grow.
SNAPSHOT_PACK_CHUNK = 32
# A decision turn of at most this many customers is scored by the shard's replica, a larger one
# by the arbitrator (see ``_decide_turn``). At 4,000 events/s turns hold ~12 customers: with 8,
# two thirds of them went remote (p50 9 ms, p99 36-53 ms, against 0.7 ms scored here).
LOCAL_SCORING_MAX_SETS = 32
# While batches queue for the shard, a decision round waits for more customers (up to
# ``turn_customers``), but never longer than this after the first it put off: each round has
# fixed costs (a ledger transaction, candidates and scoring set-up, a turn of the loop), and a
# shard that is behind catches up sooner with fewer, larger rounds. Without a queue a round
# runs after every turn of events, as soon as it can.
DECISION_HOLD_S = 0.05


class ShardActorBody:
    def __init__(self, index: int, config_json: str, catalog_wire: dict[str, Any],
                 table_wire: dict[str, Any], channel_factory: ChannelFactory,
                 store_factory: StoreFactory,
                 shard_server_factory: ShardServerFactory | None = None) -> None:
        heap.collect_rarely()
        self.config = EngineConfig.model_validate_json(config_json)
        gil.hand_over_every(self.config.gil_switch_interval_ms)
        store = store_factory()
        self.index = index
        self.table = PartitionTable.from_wire(table_wire)
        self.shard_server_factory = shard_server_factory
        self.shard_server: ShardServer | None = None
        self.shard_address: str | None = None
        self.persistence = ShardPersistence(store, index, self.table,
                                            self.config.shard.snapshot_interval_s,
                                            self.config.shard.max_replay_events)
        catalog = Catalog.from_wire(catalog_wire)
        self.always_on = ShardAlwaysOn(self.config.sweep, self.config.runs,
                                       self.config.num_shards, catalog)
        self.core = ShardCore(index, catalog, self.config.shard, make_clock(self.config.clock),
                              channel_factory(), store, self.persistence, self.always_on,
                              self.config.arbitration)
        self.recovered = self.core.recover()
        heap.freeze_resident()
        self.steps = StepTimes()  # how long each kind of step holds the loop (health)
        self.way_in = WayIn()  # how batches and Decides got here, and took how long
        self.steps.time_collections()
        self.freezer = heap.SurvivorFreezer(self.config.shard.full_collection_interval_s)
        self.arbitrators = ActorLanes(ray_calls.ActorDirectory(
            "arbitration", self.config.num_arbitrators, self.config.namespace),
            ARBITRATOR_LANE_METHODS)
        self.arbitrator_index = index % self.config.num_arbitrators
        self.fenced = False
        self._batches = asyncio.Lock()  # submits apply in arrival order, one at a time
        self._batches_queued = 0  # submits waiting for _batches (the shard is behind)
        self.queued_events = 0  # their events
        self.events_direct = 0  # events clients sent here directly (``take_direct``)
        self._held_since: float | None = None  # when the decider first put a round off
        self._turns = asyncio.Condition()  # guards _in_decision
        self._in_decision: set[str] = set()  # customers between candidates and settling
        self._background: asyncio.Task[None] | None = None
        self._replica_due = 0.0  # monotonic time of the next scorer replica refresh
        self._always_on_task: asyncio.Task[None] | None = None
        self._timers_task: asyncio.Task[None] | None = None
        self._snapshots_task: asyncio.Task[None] | None = None
        self._passivate_due = 0.0  # monotonic time of the next passivation in a long round
        self._decider_task: asyncio.Task[None] | None = None
        self._decisions_due = asyncio.Event()
        self.lane_host = LaneHost(self, SHARD_LANE_METHODS,
                                  what=ray_calls.actor_name("shard", index))

    def _ensure_background(self) -> None:
        if self._background is None:
            loop = asyncio.get_running_loop()
            self._background = loop.create_task(self._maintain())
            self._timers_task = loop.create_task(self._timers())
            self._snapshots_task = loop.create_task(self._snapshots())
            self._always_on_task = loop.create_task(self._always_on())
            self._decider_task = loop.create_task(self._decider())
            if self.core.awaiting_decision:  # recovered customers not yet decided
                self._decisions_due.set()

    async def _always_on(self) -> None:
        """Sweep chunks and run injections, one short turn at a time: batches waiting for the
        lock go in between (the lock is FIFO), so triggers are never starved."""
        while not self.fenced:
            await asyncio.sleep(self.config.sweep.tick_s)
            try:
                if self.core.always_on_step():
                    self._decisions_due.set()
            except FencedError:
                self._fence()
            except Exception:  # loop boundary
                log.exception("shard %d: sweep/run step failed", self.core.index)

    async def start_run(self, run_json: str) -> dict[str, Any]:
        """Select this shard's part of an emergency run and start injecting it."""
        self._ensure_background()
        run = EmergencyRun.model_validate_json(run_json)
        return self.always_on.start_run(run, self.core.clock.now_ms()).to_wire()

    async def runs(self) -> list[dict[str, Any]]:
        return self.always_on.progress()

    async def _timers(self) -> None:
        """Fire due timers (detectors' waits, deferred sends, response windows) every
        ``timer_tick_s``. A loop of its own: a snapshot round that has many changed customers
        to save takes many steps, each waiting for the batch lock behind the queued batches,
        and timers must not wait for it (a saturated shard with 200,000 customers fired them
        twice in 30 s when they shared the maintenance loop)."""
        while not self.fenced:
            await asyncio.sleep(self.config.shard.timer_tick_s)
            try:
                with self.steps.timed("timers"):
                    due = self.core.tick()
                if due:
                    self._decisions_due.set()
                self.freezer.tick()  # the collector sees one tick's allocations at most
            except FencedError:
                self._fence()
            except Exception:  # loop boundary: timers never kill the shard
                log.exception("shard %d: timers failed", self.core.index)

    async def _maintain(self) -> None:
        """Retry failed sends, report to the arbitrator, refresh the scorer replica."""
        while not self.fenced:
            await asyncio.sleep(self.config.shard.timer_tick_s)
            try:
                self.core.redispatch()
                await self._report_to_arbitration()
                if time.monotonic() >= self._replica_due:
                    await self.refresh_replica()
            except FencedError:
                self._fence()
            except Exception:  # loop boundary: maintenance never kills the shard
                log.exception("shard %d maintenance failed", self.core.index)

    async def _snapshots(self) -> None:
        """Snapshot rounds, one after the other (a loop of its own: a round with many changed
        customers takes long under load, and sends, reports and timers must not wait)."""
        while not self.fenced:
            await asyncio.sleep(self.config.shard.timer_tick_s)
            try:
                await self._snapshot_step()
            except FencedError:
                self._fence()
            except Exception:  # loop boundary: snapshots never kill the shard
                log.exception("shard %d: snapshot round failed", self.core.index)

    async def _snapshot_step(self) -> None:
        """Snapshot the partitions whose turn has come, in short steps, passivating before
        the first and then once per ``timer_tick_s`` (a long round must not let memory grow
        past ``max_resident_customers``). Each step runs between batches (it takes the batch
        lock): a batch is journaled whole before its turns are applied, and a snapshot must
        not truncate the journal of events not yet applied. Calls that do not wait for the
        batch lock (Decides, decisions, timers) go on between chunks of packing."""
        async with self._batches:
            self._passivate()
        await self._save_in_steps(self.persistence.due_partitions())

    async def _save_in_steps(self, partitions: list[int]) -> int:
        """``partitions``' changed customers saved in short steps (``_save``), each between
        batches, passivating once per ``timer_tick_s`` meanwhile; the customers saved."""
        saved = 0
        for step in self.persistence.steps(partitions, max_customers=SNAPSHOT_CUSTOMERS_PER_STEP,
                                           max_partitions=SNAPSHOT_PARTITIONS_PER_STEP):
            await ray_calls.let_calls_in()  # calls that came in during the last step go first
            async with self._batches:
                if time.monotonic() >= self._passivate_due:
                    self._passivate()
                saved += await self._save(step)
        return saved

    async def _save(self, partitions: list[int]) -> int:
        """One snapshot step (the caller holds the batch lock): the partitions' changed
        customers packed a chunk at a time, then written with their marks raised; the
        customers saved."""
        step = self.persistence.take_snapshot(partitions)
        try:
            now_ms = self.core.clock.now_ms()
            while True:
                with self.steps.timed("snapshot pack"):
                    packed = self.persistence.pack_rows(
                        step, self.core.customers.get, now_ms, SNAPSHOT_PACK_CHUNK)
                if packed:
                    break
                await ray_calls.let_calls_in()  # a Decide waits for one chunk
            with self.steps.timed("snapshot write"):
                self.persistence.write_snapshot(step)
        except BaseException:
            self.persistence.settle_snapshot(step, saved=False)
            raise
        return self.persistence.settle_snapshot(step, saved=True)

    async def _catch_up(self, events: int) -> None:
        """Snapshot ahead of a batch of ``events`` while a restart would replay more than
        ``max_replay_events``: the partitions with the most to replay, about as many events'
        worth as the batch brings. Under overload this is the backpressure that keeps
        recovery bounded: batches slow to what the shard can also save, and the routers,
        their windows full, hold clients back."""
        self.persistence.stats["catch_ups"] += 1
        await self._save(self.persistence.catch_up_step(
            events, max_partitions=SNAPSHOT_PARTITIONS_PER_STEP))

    def _passivate(self) -> None:
        """Passivate (under the batch lock: between batches)."""
        with self.steps.timed("passivate"):
            self.core.passivate()
        self._passivate_due = time.monotonic() + self.config.shard.timer_tick_s

    def _fence(self) -> None:
        log.critical("shard %d: a newer incarnation owns its partitions; refusing work",
                     self.core.index)
        self.fenced = True

    async def submit(self, batch: bytes, stamps: list[float | None] | None = None,
                     partitions: list[int] | None = None) -> bytes:
        """A router's batch (``take``); ``stamps``: the router's, for the batch's way in
        (``WayIn``, in health); ``partitions``: its events per partition, as the router
        counted them (``codec.flat_counts``; counted here when absent or not the batch's)."""
        arrived_s = time.time()
        try:
            events, packed = codec.unpack_events(batch)
        except CodecError as exc:
            return codec.pack(codec.ACKS, [], refused=str(exc))
        counts = None if partitions is None else codec.counts_from_flat(partitions,
                                                                        len(events))
        return codec.pack(codec.ACKS, await self.take(events, packed, stamps, arrived_s,
                                                      counts))

    async def take(self, events: list[Any], packed: bytes | None,
                   stamps: list[float | None] | None, arrived_s: float,
                   partitions: dict[int, int] | None = None) -> list[list[Any]]:
        """Journal and apply valid events of this shard's customers (``packed``: the same
        events as msgpack bytes, or ``None``; ``partitions``: how many events each partition
        got, when the caller has counted), a turn of ``turn_events`` at a time: between
        turns an inbound Decide or a decision round runs, so a large batch never holds them
        up. One ack each, in order: journaled and applied, decisions follow."""
        self._ensure_background()
        turn = self.config.shard.turn_events
        acks: list[list[Any]] = []
        self._batches_queued += 1
        self.queued_events += len(events)
        try:
            await self._batches.acquire()
        finally:
            self._batches_queued -= 1
            self.queued_events -= len(events)
        try:
            locked_s = time.time()
            try:
                if not self.fenced:
                    if self.persistence.behind():
                        await self._catch_up(len(events))
                    with self.steps.timed("journal"):
                        # the whole batch, one transaction
                        self.core.journal(events, packed, partitions)
            except FencedError:
                self._fence()
            for start in range(0, len(events), turn):
                # a Decide waits for the journal's write or one turn, not for the whole batch
                await ray_calls.let_calls_in()
                if self.fenced:
                    break
                try:
                    with self.steps.timed("apply"):
                        acks.extend(self.core.apply_events(events[start:start + turn],
                                                           journal=False))
                    if self.core.clock.follows_events:
                        self.core.tick()  # time moved with the events: run what is due
                except FencedError:
                    self._fence()
                if self.core.awaiting_decision:
                    self._decisions_due.set()
        finally:
            self._batches.release()
        if stamps is not None:
            self.way_in.record_batch(stamps, arrived_s, locked_s, time.time())
        acks.extend([codec.RETRY, "shard fenced off"] for _ in events[len(acks):])
        return acks

    async def take_direct(self, events: list[Any], packed: bytes | None, arrived_s: float,
                          taken_s: float | None = None) -> list[list[Any]]:
        """A client's events, sent here with no router in between (the frames edge, to a
        client that asked ``Routes``): checked as a router checks them (``admit_events``:
        ``WrongShard`` refuses the whole request when the client's routes are stale), then
        ``take``. An invalid event is refused alone, with its reason, and kept as a dead
        letter. ``BackpressureError`` when ``max_queued_events`` already wait;
        ``EngineUnavailable`` once fenced off.

        ``packed``: the events as msgpack bytes, journaled as they are when all are valid.
        ``arrived_s``/``taken_s``: when the request came in and when its events were
        unpacked (the batch's way in: the shard's edge stands for the router, no hop)."""
        taken_s = taken_s or time.time()
        if self.fenced:  # the client sends through a router, which reaches the new one
            raise EngineUnavailable("a newer incarnation owns its partitions",
                                    what=f"shard {self.index}")
        limit = self.config.shard.max_queued_events
        if self.queued_events and self.queued_events + len(events) > limit:
            raise BackpressureError(f"shard {self.index} has {self.queued_events:,} events "
                                    f"waiting (max_queued_events {limit:,})",
                                    retry_after_s=self.config.router.resend_backoff_s)
        valid, rejected, partitions = admit_events(events, self.core.catalog.signal_schemas,
                                                   self.table, self.index)
        acks: list[list[Any] | None] = [None] * len(events)
        for i, exc in rejected:
            acks[i] = [codec.REJECTED, exc.reason, exc.field]
            self.core.dead_letter(events[i], exc, stage="shard edge")
        self.events_direct += len(events)
        checked_s = time.time()
        taken = iter(await self.take(valid, None if rejected else packed,
                                     [arrived_s, taken_s, checked_s], checked_s, partitions)
                     if valid else ())
        return [ack if ack is not None else next(taken) for ack in acks]

    async def _arbitrate(self, sets: list[CandidateSet]) -> bytes:
        """Score at the arbitrator, with the outcomes and budget settlements gathered since
        the last call riding along (kept for the next call if this one fails)."""
        learned, settled = self.core.take_learned()
        try:
            reply: bytes = await self.arbitrators.call(
                self.arbitrator_index, "arbitrate",
                codec.encode_candidate_sets(sets, learned=learned, settled=settled),
                timeout_s=self.config.call_timeout_s)
        except EngineUnavailable:
            self._keep_for_later(learned, settled)
            raise
        return reply

    async def _decider(self) -> None:
        """The one task that decides: customers awaiting a decision, whatever put them there,
        in one arbitration call per trigger. Acknowledging a batch does not wait for it."""
        while not self.fenced:
            await self._decisions_due.wait()
            self._decisions_due.clear()
            if self._hold_round():
                continue  # the next turn of events wakes the decider again
            try:
                await self._decide_awaiting()
            except FencedError:
                self._fence()
            except Exception:  # loop boundary: a failed decision round never stops deciding
                log.exception("shard %d: decisions failed", self.core.index)

    def _hold_round(self) -> bool:
        """Put the round off while batches queue, it has fewer than ``turn_customers`` and
        ``DECISION_HOLD_S`` has not passed since it was first put off."""
        if (self._batches_queued and len(self.core.awaiting_decision)
                < self.config.shard.turn_customers):
            now = time.monotonic()
            if self._held_since is None:
                self._held_since = now
            if now - self._held_since < DECISION_HOLD_S:
                return True
        self._held_since = None
        return False

    async def _claim(self, customer_ids: Collection[str]) -> None:
        """Wait until none of these customers is being decided, then mark them: a customer
        has one decision in flight at a time (contact history is read by one at a time)."""
        async with self._turns:
            await self._turns.wait_for(lambda: self._in_decision.isdisjoint(customer_ids))
            self._in_decision.update(customer_ids)

    async def _release(self, customer_ids: Collection[str]) -> None:
        async with self._turns:
            self._in_decision.difference_update(customer_ids)
            self._turns.notify_all()
        if self.core.awaiting_decision:
            self._decisions_due.set()

    def _take_awaiting(self) -> dict[str, list[str]]:
        """The customers to decide now; those with a decision in flight wait for the next
        round (their moments stay awaiting)."""
        groups = self.core.take_awaiting()
        for trigger, customers in groups.items():
            busy = [c for c in customers if c in self._in_decision]
            for customer_id in busy:
                self.core.awaiting_decision.setdefault(customer_id, trigger)
            if busy:
                groups[trigger] = [c for c in customers if c not in self._in_decision]
        return {trigger: customers for trigger, customers in groups.items() if customers}

    async def _decide_awaiting(self) -> None:
        """Decide the customers awaiting it, ``turn_customers`` at a time: candidates, one
        arbitration call, settling. Small calls keep the arbitrator's queue short for an
        inbound Decide, and the first treatments of a large round go out early. Only
        ``_decider`` (or a drain) runs this; each customer is claimed until it is settled."""
        groups = self._take_awaiting()
        claimed = [c for customers in groups.values() for c in customers]
        self._in_decision.update(claimed)  # none was busy: _take_awaiting left those out
        turns = [(trigger, part) for trigger, customers in groups.items()
                 for part in self._turns_of(customers)]
        try:
            for i, (trigger, part) in enumerate(turns):
                if i:
                    await ray_calls.let_calls_in()  # a Decide or a batch waits for one turn
                if not await self._decide_turn(part, trigger):
                    log.warning("shard %d: arbitration unavailable; customers wait",
                                self.core.index)
                    for later_trigger, later in turns[i:]:  # they wait for the next round
                        for customer_id in later:
                            self.core.awaiting_decision.setdefault(customer_id, later_trigger)
                    await asyncio.sleep(self.config.router.resend_backoff_s)
                    break
        finally:
            await self._release(claimed)

    async def _decide_turn(self, customers: list[str], trigger: str) -> bool:
        """Decide one turn of customers; ``False`` if the arbitrator could not be reached.

        A turn of up to ``LOCAL_SCORING_MAX_SETS`` customers is scored here by the replica
        (unless a candidate has a volume budget to reserve): for it the remote call was the
        slowest step of a decision under load (p50 9 ms, p99 36-53 ms at 4,000 events/s,
        against 0.7 ms scored here) and cost more CPU than the scoring. A larger turn goes
        to the arbitrator, which scores it on another core while the shard goes on applying
        events (scoring every turn here cost a closed-loop run a third of its throughput)."""
        with self.steps.timed("candidates and scoring"):
            sets, removals = self.core.candidate_sets(customers, trigger=trigger)
            verdicts = (self.core.score_here(sets) if len(sets) <= LOCAL_SCORING_MAX_SETS
                        else None)
        if verdicts is None:
            try:
                reply = await self._arbitrate(sets)
            except EngineUnavailable:
                return False
            verdicts = _verdicts(reply, removals)
        else:
            await ray_calls.let_calls_in()  # a Decide waits for one of the two steps, not both
        with self.steps.timed("settle"):
            self.core.settle(verdicts, removals, trigger)
        return True

    def _turns_of(self, items: list[Any]) -> list[list[Any]]:
        size = self.config.shard.turn_customers
        return [items[i:i + size] for i in range(0, len(items), size)]

    async def _report_to_arbitration(self) -> None:
        """Outcomes to learn from and budget reservations settled, in one call each."""
        learned, settled = self.core.take_learned()
        try:
            if settled:
                await self.arbitrators.call(self.arbitrator_index, "settle_budgets", settled,
                                            timeout_s=self.config.call_timeout_s)
            if learned:
                await self.arbitrators.call(self.arbitrator_index, "learn",
                                            codec.pack(codec.OUTCOMES, learned),
                                            timeout_s=self.config.call_timeout_s)
        except EngineUnavailable:
            log.warning("shard %d: arbitration unavailable; %d outcomes kept for later",
                        self.core.index, len(learned))
            self._keep_for_later(learned, settled)

    def _keep_for_later(self, learned: list[list[Any]], settled: list[list[Any]]) -> None:
        self.core.learned[:0] = learned
        self.core.budget_settled[:0] = settled

    async def record_outcomes(self, batch: bytes) -> bytes:
        """Outcomes of treatments (delivered, opened, accepted...) for this shard's customers."""
        self._ensure_background()
        try:
            items = codec.unpack(batch, codec.OUTCOMES)
        except CodecError as exc:
            return codec.pack(codec.ACKS, [], refused=str(exc))
        acks = self.core.record_outcomes(items)
        await self._report_to_arbitration()
        return codec.pack(codec.ACKS, acks)

    async def report(self) -> list[dict[str, Any]]:
        """Resolved treatments (outcome or ignored; holdouts too) for the lift report."""
        return [dataclasses.asdict(r) for r in self.core.resolutions]

    async def refresh_replica(self) -> None:
        """Bring the scorer replica up to the arbitrator's levers and learned counts (every
        ``arbitration.replica_refresh_s``, and at once after a lever change)."""
        self._replica_due = time.monotonic() + self.config.arbitration.replica_refresh_s
        try:
            reply = await self.arbitrators.call(self.arbitrator_index, "replica",
                                                self.core.replica_stamp,
                                                timeout_s=self.config.call_timeout_s)
        except EngineUnavailable:
            return  # the replica stays as it was; a Decide still has the arbitrator
        if reply is not None:
            self.core.load_replica(reply)

    async def decide(self, customer_id: str, channel: str | None, present: bool = False,
                     sent_at_s: float | None = None) -> bytes:
        """Inbound: the ranked actions for one customer now. Nothing is sent; with
        ``present`` the caller shows the winner, recorded as a treatment. Scored here by the
        replica, or by the arbitrator when a candidate has a volume budget to reserve.
        ``sent_at_s``: when the gateway sent it, for its way in (``WayIn``, in health)."""
        arrived_s = time.time()
        await self._claim([customer_id])
        claimed_s = time.time()
        try:
            with self.steps.timed("decide"):
                sets, removals = self.core.candidate_sets([customer_id], inbound=True,
                                                          channel=channel)
                local = self.core.score_here(sets)
            verdict = (local if local is not None
                       else _verdicts(await self._arbitrate(sets), removals))[0]
            presented = self.core.present(verdict) if present else None
            if local is None:  # the arbitrator reserved the winner's budget: spend or give back
                self.core.settle_inbound(verdict, presented is not None)
        finally:
            await self._release([customer_id])
        self.way_in.record_decide(sent_at_s, arrived_s, claimed_s, time.time())
        removed = [[r.action_id, r.policy, r.reason] for r in removals[customer_id]]
        return codec.encode_verdicts([verdict], removed=removed,
                                     treatment_id=presented.treatment_id if presented else "")

    def shard_of(self, customer_id: str) -> int:
        return self.table.shard_of(customer_id)

    async def serve_clients(self) -> str | None:
        """Serve submits and Decides about this shard's customers in this process
        (``ShardServer``); return its address (None: this engine has none). Idempotent: the
        supervisor calls it after every health check, so a restarted shard serves again."""
        if self.shard_server is None and self.shard_server_factory is not None:
            server = self.shard_server_factory(self)
            self.shard_address = await server.start()
            self.shard_server = server
        return self.shard_address

    async def serving(self) -> str | None:
        """Where this shard serves clients (``None``: nowhere, e.g. after Ray restarted it):
        the supervisor's check every ``health_interval_s``, cheaper than ``health``. It
        starts the background loops (timers, sweep, snapshots, redispatch) of a shard Ray
        restarted, traffic or not."""
        self._ensure_background()
        return self.shard_address if self.shard_server is not None else None

    async def lane(self) -> list[str]:
        """Where this shard serves its lane (``actors.lanes``): ``[node id, socket path]``.
        Callers on the same node send batches, Decides and outcomes there instead of
        through Ray."""
        return await self.lane_host.where()

    async def explain(self, customer_id: str) -> list[dict[str, Any]]:
        return self.core.recent_decisions(customer_id)

    async def checkpoint(self) -> int:
        """Snapshot every changed customer now, in the snapshot rounds' short steps (batches,
        Decides and decisions go on between them, as in any round): once it returns, a
        restart replays nothing journaled before the call. A customer awaiting a decision
        keeps that in its snapshot. The customers saved. (``flush``, at a clean stop, decides
        first and saves in one transaction, with nothing coming in.)"""
        try:
            return await self._save_in_steps(self.persistence.partitions)
        except FencedError:
            self._fence()
            raise

    async def flush(self) -> int:
        """Decide what awaits a decision, then snapshot every changed customer (a clean stop
        calls this)."""
        while (self.core.awaiting_decision or self._in_decision) and not self.fenced:
            await self._decide_awaiting()
            if self._in_decision:  # the decider's own round: wait for it to settle
                await asyncio.sleep(0.01)
        self.core.mark_sent()
        async with self._batches:
            return self.persistence.snapshot(self.core.customers.get, self.core.clock.now_ms())

    async def health(self) -> dict[str, Any]:
        self._ensure_background()
        return {"index": self.core.index, "customers": len(self.core.customers),
                "fenced": self.fenced, "recovered": self.recovered, **self.core.stats,
                **self.persistence.stats, "replay_backlog": self.persistence.unsaved_events,
                "sweep": self.always_on.sweep_progress(),
                "steps": self.steps.to_wire(), "way_in": self.way_in.to_wire(),
                "store_writes": self.core.store.write_times(),
                "lane_calls": self.lane_host.served(),
                "shard_address": self.shard_address,
                "direct_calls": 0 if self.shard_server is None else self.shard_server.served,
                "events_direct": self.events_direct,
                "gc_cycles_found": self.freezer.cycles_found}


def _verdicts(reply: bytes, removals: dict[str, list[Removal]]) -> list[Verdict]:
    """The arbitrator's verdicts; the candidates its budgets removed join ``removals``."""
    verdicts, meta = codec.decode_verdict_batch(reply)
    for customer_id, refused in meta.get("removed", {}).items():
        removals.setdefault(customer_id, []).extend(
            Removal(action_id=a, policy=p, reason=r) for a, p, r in refused)
    return verdicts


ShardActor = ray.remote(ShardActorBody)
