"""ShardActor: the Ray shell hosting many customer actors (see ``shard_core.ShardCore``).

Batches are processed one at a time (an asyncio lock), so a customer's turn — journal, apply,
decide, fire — never interleaves with another message for the same customer. On start (and on
every Ray restart) the shard acquires its partitions and rebuilds its customers from the store;
a background task snapshots changed customers and retries failed sends from the outbox.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

import ray

from ..engine import codec
from ..engine.arbitration import CandidateSet
from ..engine.catalog import Catalog
from ..engine.clock import make_clock
from ..engine.config import EngineConfig
from ..engine.errors import CodecError, EngineUnavailable, FencedError
from ..engine.models import Removal
from ..engine.partitions import PartitionTable
from ..engine.runs import EmergencyRun
from . import ray_calls
from .ports import ChannelFactory, StoreFactory
from .shard_always_on import ShardAlwaysOn
from .shard_core import ShardCore
from .shard_persistence import ShardPersistence

log = logging.getLogger(__name__)


class ShardActorBody:
    def __init__(self, index: int, config_json: str, catalog_wire: dict[str, Any],
                 table_wire: dict[str, Any], channel_factory: ChannelFactory,
                 store_factory: StoreFactory) -> None:
        self.config = EngineConfig.model_validate_json(config_json)
        store = store_factory()
        self.persistence = ShardPersistence(store, index, PartitionTable.from_wire(table_wire),
                                            self.config.shard.snapshot_interval_s)
        catalog = Catalog.from_wire(catalog_wire)
        self.always_on = ShardAlwaysOn(self.config.sweep, self.config.runs,
                                       self.config.num_shards, catalog)
        self.core = ShardCore(index, catalog, self.config.shard, make_clock(self.config.clock),
                              channel_factory(), store, self.persistence, self.always_on)
        self.recovered = self.core.recover()
        self.arbitrators = ray_calls.ActorDirectory("arbitration", self.config.num_arbitrators,
                                                    self.config.namespace)
        self.arbitrator_index = index % self.config.num_arbitrators
        self.fenced = False
        self._lock = asyncio.Lock()
        self._background: asyncio.Task[None] | None = None
        self._always_on_task: asyncio.Task[None] | None = None
        self._decider_task: asyncio.Task[None] | None = None
        self._decisions_due = asyncio.Event()

    def _ensure_background(self) -> None:
        if self._background is None:
            loop = asyncio.get_running_loop()
            self._background = loop.create_task(self._maintain())
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
                async with self._lock:
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
        async with self._lock:
            return self.always_on.start_run(run, self.core.clock.now_ms()).to_wire()

    async def runs(self) -> list[dict[str, Any]]:
        return self.always_on.progress()

    async def _maintain(self) -> None:
        """Fire due timers, snapshot changed customers, retry failed sends."""
        while not self.fenced:
            await asyncio.sleep(self.config.shard.timer_tick_s)
            try:
                async with self._lock:
                    if self.core.tick():
                        self._decisions_due.set()
                    await self._report_to_arbitration()
                    self.core.passivate()
                    if self.persistence.snapshot_due():
                        self.persistence.snapshot(self.core.customers.get,
                                                  self.core.clock.now_ms())
                    self.core.redispatch()
            except FencedError:
                self._fence()
            except Exception:  # loop boundary: maintenance never kills the shard
                log.exception("shard %d maintenance failed", self.core.index)

    def _fence(self) -> None:
        log.critical("shard %d: a newer incarnation owns its partitions; refusing work",
                     self.core.index)
        self.fenced = True

    async def submit(self, batch: bytes) -> bytes:
        self._ensure_background()
        try:
            events = codec.unpack(batch, codec.EVENTS)
        except CodecError as exc:
            return codec.pack(codec.ACKS, [], refused=str(exc))
        async with self._lock:
            if self.fenced:
                return codec.pack(codec.ACKS, [[codec.RETRY, "shard fenced off"]] * len(events))
            try:
                acks = self.core.apply_events(events)
                if self.core.clock.follows_events:  # time moved with the events: run what is due
                    self.core.tick()
            except FencedError:
                self._fence()
                return codec.pack(codec.ACKS, [[codec.RETRY, "shard fenced off"]] * len(events))
        if self.core.awaiting_decision:
            self._decisions_due.set()
        return codec.pack(codec.ACKS, acks)  # journaled and applied: decisions follow

    async def _arbitrate(self, sets: list[CandidateSet]) -> bytes:
        reply: bytes = await self.arbitrators.call(self.arbitrator_index, "arbitrate",
                                                   codec.encode_candidate_sets(sets),
                                                   timeout_s=self.config.call_timeout_s)
        return reply

    async def _decider(self) -> None:
        """The one task that decides: customers awaiting a decision, whatever put them there,
        in one arbitration call per trigger. Acknowledging a batch does not wait for it."""
        while not self.fenced:
            await self._decisions_due.wait()
            self._decisions_due.clear()
            try:
                await self._decide_awaiting()
            except FencedError:
                self._fence()
            except Exception:  # loop boundary: a failed decision round never stops deciding
                log.exception("shard %d: decisions failed", self.core.index)

    async def _decide_awaiting(self) -> None:
        """Candidates under the lock; arbitration without it (batches keep being applied);
        settling under it again. Only ``_decider`` (or a drain) runs this, so decisions stay
        in order and contact history is never read by two decisions at once."""
        async with self._lock:
            groups = self.core.take_awaiting()
            prepared = [(trigger, *self.core.candidate_sets(customers, trigger=trigger))
                        for trigger, customers in groups.items()]
        for trigger, sets, removals in prepared:
            try:
                reply = await self._arbitrate(sets)
            except EngineUnavailable:
                log.exception("shard %d: arbitration unavailable; %d customers wait",
                              self.core.index, len(sets))
                for cset in sets:
                    self.core.awaiting_decision.setdefault(cset.customer_id, trigger)
                self._decisions_due.set()
                await asyncio.sleep(self.config.router.resend_backoff_s)
                continue
            meta = codec.unpack_envelope(reply, codec.VERDICTS).get("meta") or {}
            for customer_id, refused in meta.get("removed", {}).items():
                removals.setdefault(customer_id, []).extend(
                    Removal(action_id=a, policy=p, reason=r) for a, p, r in refused)
            async with self._lock:
                self.core.settle(codec.decode_verdicts(reply), removals, trigger)
        async with self._lock:
            await self._report_to_arbitration()

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
            self.core.learned[:0] = learned
            self.core.budget_settled[:0] = settled

    async def record_outcomes(self, batch: bytes) -> bytes:
        """Outcomes of treatments (delivered, opened, accepted...) for this shard's customers."""
        self._ensure_background()
        try:
            items = codec.unpack(batch, codec.OUTCOMES)
        except CodecError as exc:
            return codec.pack(codec.ACKS, [], refused=str(exc))
        async with self._lock:
            acks = self.core.record_outcomes(items)
            await self._report_to_arbitration()
        return codec.pack(codec.ACKS, acks)

    async def report(self) -> list[dict[str, Any]]:
        """Resolved treatments (outcome or ignored; holdouts too) for the lift report."""
        return [dataclasses.asdict(r) for r in self.core.resolutions]

    async def decide(self, customer_id: str, channel: str | None, present: bool = False
                     ) -> bytes:
        """Inbound: the ranked actions for one customer now. Nothing is sent; with
        ``present`` the caller shows the winner, recorded as a treatment."""
        async with self._lock:
            sets, removals = self.core.candidate_sets([customer_id], inbound=True,
                                                      channel=channel)
            verdict = codec.decode_verdicts(await self._arbitrate(sets))[0]
            presented = self.core.present(verdict) if present else None
            await self._report_to_arbitration()
        removed = [[r.action_id, r.policy, r.reason] for r in removals[customer_id]]
        return codec.encode_verdicts([verdict], removed=removed,
                                     treatment_id=presented.treatment_id if presented else "")

    async def explain(self, customer_id: str) -> list[dict[str, Any]]:
        async with self._lock:
            state = self.core.find(customer_id)
        if state is None:
            return []
        return [d.model_dump(mode="json") for d in state.decisions]

    async def flush(self) -> int:
        """Decide what awaits a decision, then snapshot every changed customer (a clean stop
        calls this)."""
        while self.core.awaiting_decision and not self.fenced:
            await self._decide_awaiting()
        async with self._lock:
            return self.persistence.snapshot(self.core.customers.get, self.core.clock.now_ms())

    async def health(self) -> dict[str, Any]:
        self._ensure_background()
        return {"index": self.core.index, "customers": len(self.core.customers),
                "fenced": self.fenced, "recovered": self.recovered, **self.core.stats,
                **self.persistence.stats, "sweep": self.always_on.sweep_progress()}


ShardActor = ray.remote(ShardActorBody)
