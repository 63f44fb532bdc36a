"""What the gRPC server (and any other edge) calls: the engine's routers, shards and supervisor.

It round-robins batches over the routers and turns router refusals into typed errors. Queries
about one customer (an inbound Decide, Explain) go straight to its shard: one actor hop fewer
on the path whose latency callers wait for. A router or shard that fails a call is looked up
again by name before its next use: the supervisor may have re-created it (a new actor under the
same name), and the old handle would stay dead.
"""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

from ...actors import ray_calls
from ...engine import codec
from ...engine.arbitration import Verdict
from ...engine.config import EngineConfig
from ...engine.errors import BackpressureError, CodecError, EngineUnavailable
from ...engine.outcomes import IGNORED, OutcomeKinds
from ...engine.runs import EmergencyRun

REPORTABLE_OUTCOMES = frozenset(OutcomeKinds().known() - {IGNORED})


class EngineGateway:
    def __init__(self, config: EngineConfig, supervisor: Any, routers: list[Any], *,
                 outcome_kinds: frozenset[str] = REPORTABLE_OUTCOMES) -> None:
        if not routers:
            raise ValueError("the engine has no routers")
        self.config = config
        self.outcome_kinds = outcome_kinds  # what RecordOutcome accepts (the catalog's kinds)
        self.supervisor = supervisor
        self.routers = list(routers)
        self._next = itertools.cycle(range(len(routers)))
        self.table = config.partition_table()
        self.shards = ray_calls.ActorDirectory("shard", config.num_shards, config.namespace)

        self._stale: set[int] = set()

    def _router(self) -> int:
        return next(self._next)

    async def _call_router(self, method: str, *args: Any, timeout_s: float) -> Any:
        index = self._router()
        if index in self._stale:
            fresh = ray_calls.get_actor(ray_calls.actor_name("router", index),
                                        self.config.namespace)
            if fresh is not None:
                self.routers[index] = fresh
                self._stale.discard(index)
        try:
            return await ray_calls.call(self.routers[index], method, *args, timeout_s=timeout_s,
                                        what=f"router-{index}.{method}")
        except EngineUnavailable:
            self._stale.add(index)
            raise

    async def submit(self, events: list[list[Any]]) -> list[list[Any]]:
        return await self.submit_packed(codec.pack(codec.EVENTS, events))

    async def submit_packed(self, batch: bytes) -> list[list[Any]]:
        """An events envelope (``engine.codec``), handed to a router as it is, stamped with
        the time it left (``actors.way_in``)."""
        reply = await self._call_router("submit", batch, time.time(),
                                        timeout_s=self.config.call_timeout_s * 2)
        return self._acks(reply)

    async def record_outcomes(self, outcomes: list[list[Any]]) -> list[list[Any]]:
        """Forward wire outcomes ``[treatment_id, customer_id, outcome, at_ms]``; one ack each."""
        reply = await self._call_router("record_outcomes", codec.pack("outcomes", outcomes),
                                        timeout_s=self.config.call_timeout_s * 2)
        return self._acks(reply)

    @staticmethod
    def _acks(reply: bytes) -> list[list[Any]]:
        envelope = codec.unpack_envelope(reply, codec.ACKS)
        meta = envelope.get("meta") or {}
        if "refused" in meta:
            if "retry_after_s" in meta:
                raise BackpressureError(meta["refused"], retry_after_s=meta["retry_after_s"])
            raise CodecError(meta["refused"])
        acks: list[list[Any]] = envelope["items"]
        return acks

    async def decide(self, customer_id: str, channel: str | None, present: bool = False
                     ) -> tuple[Verdict, list[Any], str]:
        """(ranked verdict, removals, treatment id when ``present``)."""
        reply = await self.shards.call(self.table.shard_of(customer_id), "decide", customer_id,
                                       channel, present, time.time(),
                                       timeout_s=self.config.call_timeout_s)
        meta = codec.unpack_envelope(reply, codec.VERDICTS).get("meta") or {}
        verdict = codec.decode_verdicts(reply)[0]
        return verdict, list(meta.get("removed", [])), str(meta.get("treatment_id", ""))

    async def explain(self, customer_id: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.shards.call(
            self.table.shard_of(customer_id), "explain", customer_id,
            timeout_s=self.config.call_timeout_s)
        return result

    async def start_run(self, run: EmergencyRun) -> dict[str, Any]:
        result: dict[str, Any] = await ray_calls.call(
            self.supervisor, "start_run", run.model_dump_json(),
            timeout_s=self.config.call_timeout_s, what="start_run")
        return result

    async def runs(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await ray_calls.call(
            self.supervisor, "runs", timeout_s=self.config.call_timeout_s, what="runs")
        return result

    async def report(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await ray_calls.call(
            self.supervisor, "report", timeout_s=self.config.call_timeout_s, what="report")
        return result

    async def set_lever(self, action_id: str, lever: float) -> dict[str, float]:
        result: dict[str, float] = await ray_calls.call(
            self.supervisor, "set_lever", action_id, lever,
            timeout_s=self.config.call_timeout_s, what="levers")
        return result

    async def levers(self) -> dict[str, float]:
        result: dict[str, float] = await ray_calls.call(
            self.supervisor, "levers", timeout_s=self.config.call_timeout_s, what="levers")
        return result

    async def health(self) -> dict[str, Any]:
        result: dict[str, Any] = await ray_calls.call(
            self.supervisor, "health", timeout_s=self.config.call_timeout_s, what="health")
        return result

    @staticmethod
    def to_json(data: Any) -> str:
        return json.dumps(data, default=str)
