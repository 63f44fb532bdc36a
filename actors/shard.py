"""ShardActor: the Ray shell hosting many customer actors (see ``shard_core.ShardCore``).

Batches are processed one at a time (an asyncio lock), so a customer's turn — apply, decide,
fire — never interleaves with another message for the same customer. Health and stats calls do
not take the lock.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import ray

from ..engine import codec
from ..engine.arbitration import CandidateSet
from ..engine.catalog import Catalog
from ..engine.clock import SystemClock
from ..engine.config import EngineConfig
from ..engine.errors import CodecError, EngineUnavailable
from . import ray_calls
from .ports import ChannelFactory
from .shard_core import ShardCore

log = logging.getLogger(__name__)


class ShardActorBody:
    def __init__(self, index: int, config_json: str, catalog_wire: dict[str, Any],
                 channel_factory: ChannelFactory) -> None:
        self.config = EngineConfig.model_validate_json(config_json)
        self.core = ShardCore(index, Catalog.from_wire(catalog_wire), self.config.shard,
                              SystemClock(), channel_factory())
        self.arbitrators = ray_calls.ActorDirectory("arbitration", self.config.num_arbitrators,
                                                    self.config.namespace)
        self.arbitrator_index = index % self.config.num_arbitrators
        self._lock = asyncio.Lock()

    async def submit(self, batch: bytes) -> bytes:
        try:
            events = codec.unpack(batch, codec.EVENTS)
        except CodecError as exc:
            return codec.pack(codec.ACKS, [], refused=str(exc))
        async with self._lock:
            acks = self.core.apply_events(events)
            await self._decide_awaiting()
        return codec.pack(codec.ACKS, acks)

    async def _decide_awaiting(self) -> None:
        pending = self.core.take_awaiting()
        if not pending:
            return
        sets, removals = self.core.candidate_sets(pending)
        try:
            reply = await self._arbitrate(sets)
        except EngineUnavailable:
            log.exception("shard %d: arbitration unavailable; %d customers wait",
                          self.core.index, len(pending))
            self.core.awaiting_decision.update(pending)
            return
        self.core.settle(codec.decode_verdicts(reply), removals)

    async def _arbitrate(self, sets: list[CandidateSet]) -> bytes:
        reply: bytes = await self.arbitrators.call(self.arbitrator_index, "arbitrate",
                                                   codec.encode_candidate_sets(sets),
                                                   timeout_s=self.config.call_timeout_s)
        return reply

    async def decide(self, customer_id: str, channel: str | None) -> bytes:
        """Inbound: the ranked actions for one customer now (nothing is fired)."""
        async with self._lock:
            sets, removals = self.core.candidate_sets([customer_id], inbound=True,
                                                      channel=channel)
        reply = await self._arbitrate(sets)
        verdict = codec.decode_verdicts(reply)[0]
        removed = [[r.action_id, r.policy, r.reason] for r in removals[customer_id]]
        return codec.encode_verdicts([verdict], removed=removed)

    async def explain(self, customer_id: str) -> list[dict[str, Any]]:
        state = self.core.customers.get(customer_id)
        if state is None:
            return []
        return [d.model_dump(mode="json") for d in state.decisions]

    async def health(self) -> dict[str, Any]:
        return {"index": self.core.index, "customers": len(self.core.customers),
                **self.core.stats}


ShardActor = ray.remote(ShardActorBody)
