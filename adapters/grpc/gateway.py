"""What the gRPC server calls: the router it lives in, the engine's shards and supervisor.

The server runs inside a router actor (``RouterActorBody.serve``): events and outcomes go to
that router in-process, and from it to their shards, one actor hop from the client's
request. Queries about one customer (an inbound Decide, Explain) go straight to its shard.
"""

from __future__ import annotations

import json
import time
from typing import Any

from ...actors import ray_calls
from ...actors.lanes import SHARD_LANE_METHODS, ActorLanes
from ...actors.ports import RouterFront
from ...engine import codec
from ...engine.arbitration import Verdict
from ...engine.config import EngineConfig
from ...engine.outcomes import IGNORED, OutcomeKinds
from ...engine.partitions import PartitionTable
from ...engine.runs import EmergencyRun

REPORTABLE_OUTCOMES = frozenset(OutcomeKinds().known() - {IGNORED})


def decided(reply: bytes) -> tuple[Verdict, list[Any], str]:
    """A shard's Decide reply: (ranked verdict, removals, treatment id when presented)."""
    verdicts, meta = codec.decode_verdict_batch(reply)
    return verdicts[0], list(meta.get("removed", [])), str(meta.get("treatment_id", ""))


class EngineGateway:
    def __init__(self, config: EngineConfig, supervisor: Any, router: RouterFront, *,
                 outcome_kinds: frozenset[str] = REPORTABLE_OUTCOMES) -> None:
        self.config = config
        self.outcome_kinds = outcome_kinds  # what RecordOutcome accepts (the catalog's kinds)
        self.supervisor = supervisor
        self.router = router
        self.table = config.partition_table()
        self.shards = ActorLanes(ray_calls.ActorDirectory(
            "shard", config.num_shards, config.namespace), SHARD_LANE_METHODS)

    async def submit(self, events: list[list[Any]], arrived_s: float | None = None,
                     packed: bytes | None = None) -> list[list[Any]]:
        """Wire events to the router; one ack each (``BackpressureError`` when it is full).
        ``arrived_s``: when their request came in (``actors.way_in``); now if not given.
        ``packed``: the events as the client packed them, which a router does not need (it
        packs each shard's share)."""
        return await self.router.submit_events(events, arrived_s or time.time())

    async def record_outcomes(self, outcomes: list[list[Any]]) -> list[list[Any]]:
        """Wire outcomes ``[treatment_id, customer_id, outcome, at_ms]``; one ack each."""
        return await self.router.route_outcomes(outcomes)

    async def decide(self, customer_id: str, channel: str | None, present: bool = False
                     ) -> tuple[Verdict, list[Any], str]:
        """(ranked verdict, removals, treatment id when ``present``)."""
        return decided(await self.shards.call(
            self.table.shard_of(customer_id), "decide", customer_id, channel, present,
            time.time(), timeout_s=self.config.call_timeout_s))

    async def routes(self) -> tuple[PartitionTable, dict[int, str]]:
        """The partition table, and the shards that serve clients directly, by address."""
        addresses: dict[int, str] = await ray_calls.call(
            self.supervisor, "shard_routes", timeout_s=self.config.call_timeout_s,
            what="shard_routes")
        return self.table, addresses

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

    async def checkpoint(self) -> list[int]:
        """Every shard snapshotted now: the customers each saved."""
        result: list[int] = await ray_calls.call(
            self.supervisor, "checkpoint", timeout_s=self.config.call_timeout_s,
            what="checkpoint")
        return result

    async def health(self) -> dict[str, Any]:
        result: dict[str, Any] = await ray_calls.call(
            self.supervisor, "health", timeout_s=self.config.call_timeout_s, what="health")
        return result

    @staticmethod
    def to_json(data: Any) -> str:
        return json.dumps(data, default=str)
