"""SupervisorActor: owns the engine's actors, holds the shard map, restarts what dies.

It creates (or, after its own restart, re-attaches to) named arbitration, shard and router
actors from one ``EngineConfig``; a health loop pings every actor and re-creates any that is
gone for good, then hands routers the new shard map. The data path keeps flowing while the
supervisor itself restarts: routers hold their own copy of the map, and serve gRPC (once
``serve_grpc`` asked them to; a router re-created or restarted is asked again).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Iterable
from typing import Any

import msgpack
import ray

from ..engine.config import EngineConfig
from ..engine.errors import EngineUnavailable
from ..engine.holdout import lift_report
from ..engine.outcomes import Resolution
from ..engine.runs import RunProgress
from ..engine.schedule import RunSchedule
from . import gil, ray_calls
from .arbitration import ArbitrationActor
from .ports import (
    ChannelFactory,
    EdgeFactory,
    EdgePorts,
    ShardServerFactory,
    SinkFactory,
    StoreFactory,
)
from .router import RouterActor
from .shard import ShardActor

log = logging.getLogger(__name__)

SUPERVISOR_NAME = "supervisor"
SCHEDULE_KEY = "schedule-last-fired"
RECREATE_AFTER_CHECKS = 3  # checks in a row that find an actor dead before it is re-created
PURGE_PAUSE_S = 0.05  # between two chunks of a purge: the shards write in between
EDGE_GRACE_S = 1.0  # what a request in flight at shutdown gets to finish


class DownActors:
    """Which actors the supervisor should re-create, from what each health check found.

    Ray restarts a crashed actor itself (``max_restarts``), and while the constructor runs
    (a shard reloading its snapshots and replaying its journal) every call to it fails as
    unavailable. Re-creating it then would kill a recovery in progress, and a recovery longer
    than a few checks would never end. So an actor is re-created when Ray will not restart it
    (found dead on ``RECREATE_AFTER_CHECKS`` checks in a row), or when it has been unreachable
    for ``recreate_after_s`` (a restart that hangs)."""

    def __init__(self, recreate_after_s: float) -> None:
        self.recreate_after_s = recreate_after_s
        self._dead_checks: dict[tuple[str, int], int] = {}
        self._down_since: dict[tuple[str, int], float] = {}

    def check(self, key: tuple[str, int], liveness: ray_calls.Liveness, now_s: float) -> bool:
        """Record one check of ``key``; ``True``: re-create it now."""
        if liveness == "alive":
            self._dead_checks.pop(key, None)
            self._down_since.pop(key, None)
            return False
        since = self._down_since.setdefault(key, now_s)
        dead = self._dead_checks[key] = (self._dead_checks.get(key, 0) + 1
                                         if liveness == "dead" else 0)
        if dead >= RECREATE_AFTER_CHECKS or now_s - since >= self.recreate_after_s:
            self._dead_checks.pop(key, None)
            self._down_since.pop(key, None)
            return True
        return False


class SupervisorActorBody:
    def __init__(self, config_json: str, catalog_wire: dict[str, Any],
                 channel_factory: ChannelFactory, dead_letter_factory: SinkFactory,
                 store_factory: StoreFactory, edge_factory: EdgeFactory | None = None,
                 shard_server_factory: ShardServerFactory | None = None) -> None:
        self.config_json = config_json
        self.config = EngineConfig.model_validate_json(config_json)
        gil.hand_over_every(self.config.gil_switch_interval_ms)
        self.catalog_wire = catalog_wire
        self.channel_factory = channel_factory
        self.dead_letter_factory = dead_letter_factory
        self.store_factory = store_factory
        self.edge_factory = edge_factory
        self.shard_server_factory = shard_server_factory
        self.edge_ports: EdgePorts | None = None  # what every router serves, once asked to
        self.shard_addresses: dict[int, str] = {}  # shards serving clients directly
        self.table = self.config.partition_table()
        self.arbitrators: list[Any] = []
        self.shards: list[Any] = []
        self.routers: list[Any] = []
        self.restarts = {"arbitration": 0, "shard": 0, "router": 0}
        self._health_task: asyncio.Task[None] | None = None
        self._down = DownActors(self.config.recreate_after_s)
        self.store = store_factory()
        # rows past their retention, so far
        self.purged = {"decisions": 0, "treatments": 0, "dead_letters": 0}
        self._purge_task: asyncio.Task[None] | None = None
        saved = self.store.load_model(SCHEDULE_KEY)
        self.schedule = RunSchedule(self.config.scheduled_runs, int(time.time() * 1000),
                                    msgpack.unpackb(saved) if saved else None)

    # -- creation -------------------------------------------------------------------------
    def _create_arbitrator(self, i: int) -> Any:
        return ray_calls.create(
            ArbitrationActor, i, self.config_json, self.catalog_wire, self.store_factory,
            name=ray_calls.actor_name("arbitration", i), namespace=self.config.namespace,
            num_cpus=self.config.arbitration.num_cpus, max_restarts=-1)

    def _create_shard(self, i: int) -> Any:
        return ray_calls.create(
            ShardActor, i, self.config_json, self.catalog_wire, self.table.to_wire(),
            self.channel_factory, self.store_factory, self.shard_server_factory,
            name=ray_calls.actor_name("shard", i), namespace=self.config.namespace,
            num_cpus=self.config.shard.num_cpus, max_restarts=self.config.shard.max_restarts)

    def _create_router(self, i: int) -> Any:
        return ray_calls.create(
            RouterActor, i, self.config_json, self.catalog_wire, self.table.to_wire(),
            self.dead_letter_factory, self.edge_factory, name=ray_calls.actor_name("router", i),
            namespace=self.config.namespace, num_cpus=self.config.router.num_cpus,
            max_restarts=-1)

    async def start(self) -> dict[str, int]:
        """Create every actor and wait until each answers; idempotent."""
        if not self.routers:
            self.arbitrators = [self._create_arbitrator(i)
                                for i in range(self.config.num_arbitrators)]
            self.shards = [self._create_shard(i) for i in range(self.config.num_shards)]
            self.routers = [self._create_router(i) for i in range(self.config.num_routers)]
            found = await asyncio.gather(*(
                ray_calls.call(a, "health", timeout_s=self.config.call_timeout_s)
                for a in self.arbitrators + self.shards + self.routers))
            # after this supervisor's own restart, the routers it re-attached to still serve
            self.edge_ports = next((EdgePorts(h["edge_port"], h.get("frames_port"))
                                    for h in found[-len(self.routers):]
                                    if h.get("edge_port") is not None), None)
        if self._health_task is None:
            self._health_task = asyncio.get_running_loop().create_task(self._health_loop())
        if self._purge_task is None:
            self._purge_task = asyncio.get_running_loop().create_task(self._purge_loop())
        return {"routers": len(self.routers), "shards": len(self.shards),
                "arbitrators": len(self.arbitrators)}

    # -- health and restarts --------------------------------------------------------------
    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.health_interval_s)
            try:
                await self.check_once()
            except Exception:  # loop boundary: one failed check never stops supervision
                log.exception("supervisor health check failed")
            try:
                await self.start_scheduled(int(time.time() * 1000))
            except Exception:  # loop boundary
                log.exception("supervisor: a scheduled run failed to start")

    async def check_once(self) -> dict[str, int]:
        """Ask every actor what it serves (``serving``, a cheap call); re-create the ones
        that are gone; ask those that serve nothing (re-created, or restarted by Ray) to
        serve again. Return what was replaced. Only those are asked: asking every router and
        shard at every check cost a Ray call each a second (~2 ms of CPU, both sides)."""
        replaced = {"arbitration": 0, "shard": 0, "router": 0}
        unserved: dict[str, list[int]] = {}
        for kind, group, create in (("arbitration", self.arbitrators, self._create_arbitrator),
                                    ("shard", self.shards, self._create_shard),
                                    ("router", self.routers, self._create_router)):
            found = await asyncio.gather(*(
                ray_calls.probe(h, "serving", timeout_s=self.config.call_timeout_s)
                for h in group))
            unserved[kind] = []
            for i, (liveness, reply) in enumerate(found):
                if self._down.check((kind, i), liveness, time.monotonic()):
                    log.warning("supervisor: %s %d is gone (%s); re-creating it",
                                kind, i, liveness)
                    ray_calls.kill(group[i])
                    group[i] = create(i)
                    replaced[kind] += 1
                    self.restarts[kind] += 1
                    unserved[kind].append(i)
                elif liveness != "alive":
                    if kind == "shard":  # its clients go through the routers meanwhile
                        self.shard_addresses.pop(i, None)
                elif reply is None:
                    unserved[kind].append(i)
                elif kind == "shard":
                    self.shard_addresses[i] = reply
        if self.edge_ports is not None:
            await self._serve_on(unserved["router"], self.edge_ports)
            await self._serve_clients(unserved["shard"])
        return replaced  # peers find a re-created actor by its name

    # -- the edge -------------------------------------------------------------------------
    async def serve_grpc(self) -> EdgePorts:
        """Every router serves gRPC on ``grpc.port`` and, if set, frames on
        ``grpc.frames_port`` (0: router 0 binds a free one, the others share it); return the
        ports. Idempotent."""
        if self.edge_ports is None:
            grpc = self.config.grpc
            ports = await ray_calls.call(self.routers[0], "serve",
                                         EdgePorts(grpc.port, grpc.frames_port),
                                         timeout_s=self.config.call_timeout_s)
            await self._serve_on(range(1, len(self.routers)), ports, strict=True)
            self.edge_ports = ports
            await self._serve_clients(range(len(self.shards)))
        return self.edge_ports

    async def _serve_clients(self, indexes: Iterable[int]) -> None:
        """Ask these shards to serve submits and Decides directly (when this engine's shards
        have a ``ShardServer``); keep their addresses for ``shard_routes``. A shard that
        cannot is left out: clients reach its customers through the routers."""
        indexes = list(indexes)
        if self.shard_server_factory is None or not indexes:
            return
        served = await asyncio.gather(*(ray_calls.call(self.shards[i], "serve_clients",
                                                       timeout_s=self.config.call_timeout_s)
                                        for i in indexes), return_exceptions=True)
        for i, address in zip(indexes, served, strict=True):
            if isinstance(address, str):
                self.shard_addresses[i] = address
            else:
                self.shard_addresses.pop(i, None)
                if isinstance(address, BaseException):
                    log.warning("supervisor: shard %d does not serve clients yet: %s",
                                i, address)

    async def shard_routes(self) -> dict[int, str]:
        """The shards serving clients directly: index -> host:port."""
        return dict(self.shard_addresses)

    async def _serve_on(self, indexes: Iterable[int], ports: EdgePorts, *,
                        strict: bool = False) -> None:
        """Ask these routers to serve ``ports``. ``strict``: a router that cannot serve fails
        the call (start), instead of being logged and asked again after the next check."""
        indexes = list(indexes)
        served = await asyncio.gather(*(ray_calls.call(self.routers[i], "serve", ports,
                                                       timeout_s=self.config.call_timeout_s)
                                        for i in indexes), return_exceptions=not strict)
        for i, result in zip(indexes, served, strict=True):
            if isinstance(result, BaseException):
                log.warning("supervisor: router %d does not serve %s yet: %s",
                            i, ports, result)

    # -- retention ------------------------------------------------------------------------
    async def _purge_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.retention.purge_interval_s)
            try:
                await self.purge_history(int(time.time() * 1000))
            except Exception:  # loop boundary: the next turn tries again
                log.exception("supervisor: purging history failed")

    async def purge_history(self, now_ms: int) -> dict[str, int]:
        """Delete the audited decisions, settled treatments and dead letters past their
        retention, a chunk per transaction, with a pause between chunks for the shards'
        writes."""
        retention = self.config.retention
        chunk = retention.purge_chunk_rows
        purged: dict[str, int] = {}
        for kind, days, purge in (("decisions", retention.decisions_days,
                                   self.store.purge_decisions),
                                  ("treatments", retention.treatments_days,
                                   self.store.purge_treatments),
                                  ("dead_letters", retention.dead_letters_days,
                                   self.store.purge_dead_letters)):
            if days is None:
                continue
            before_ms = now_ms - int(days * 86_400_000)
            purged[kind] = 0
            while True:
                deleted = purge(before_ms, chunk)
                purged[kind] += deleted
                if deleted < chunk:
                    break
                await asyncio.sleep(PURGE_PAUSE_S)
            self.purged[kind] += purged[kind]
        return purged

    # -- queries and operator calls -------------------------------------------------------
    async def get_routers(self) -> list[Any]:
        return list(self.routers)

    async def get_shards(self) -> list[Any]:
        return list(self.shards)

    async def set_lever(self, action_id: str, lever: float) -> dict[str, float]:
        """Set one lever on every arbitrator and every shard's scorer replica; effective for
        the next decision."""
        await asyncio.gather(*(ray_calls.call(a, "set_lever", action_id, lever,
                                              timeout_s=self.config.call_timeout_s)
                               for a in self.arbitrators))
        refreshed = await asyncio.gather(  # Decide sees it now; a shard that misses it
            *(ray_calls.call(shard, "refresh_replica",  # catches up on its next tick
                             timeout_s=self.config.call_timeout_s) for shard in self.shards),
            return_exceptions=True)
        for index, result in enumerate(refreshed):
            if isinstance(result, Exception):
                log.warning("shard %d: scorer replica not refreshed now: %s", index, result)
        levers: dict[str, float] = await ray_calls.call(
            self.arbitrators[0], "levers", timeout_s=self.config.call_timeout_s)
        return levers

    async def levers(self) -> dict[str, float]:
        levers: dict[str, float] = await ray_calls.call(
            self.arbitrators[0], "levers", timeout_s=self.config.call_timeout_s)
        return levers

    async def start_scheduled(self, now_ms: int) -> list[str]:
        """Start the scheduled runs now due (once each, even after downtime); checkpoint."""
        due = self.schedule.due(now_ms)
        started = []
        for scheduled, fire_ms in due:
            progress = await self.start_run(scheduled.run_for(fire_ms).model_dump_json())
            started.append(progress["run_id"])
        if due:
            self.store.save_model(SCHEDULE_KEY, msgpack.packb(self.schedule.to_wire()))
        return started

    async def start_run(self, run_json: str) -> dict[str, Any]:
        """Start an emergency run on every shard; return its combined progress."""
        parts = await asyncio.gather(*(ray_calls.call(s, "start_run", run_json,
                                                      timeout_s=self.config.call_timeout_s)
                                       for s in self.shards))
        run_id = parts[0]["run_id"]
        return RunProgress.combine(run_id, (RunProgress.from_wire(p) for p in parts)).to_wire()

    async def runs(self) -> list[dict[str, Any]]:
        """Every run's progress, the shards' parts added up."""
        per_shard = await asyncio.gather(*(ray_calls.call(s, "runs",
                                                          timeout_s=self.config.call_timeout_s)
                                           for s in self.shards))
        by_run: dict[str, list[RunProgress]] = {}
        for part in (p for shard in per_shard for p in shard):
            by_run.setdefault(part["run_id"], []).append(RunProgress.from_wire(part))
        return [RunProgress.combine(run_id, parts).to_wire() for run_id, parts in by_run.items()]

    async def report(self) -> list[dict[str, Any]]:
        """Treatments, outcomes and rates per action, against the holdout (lift)."""
        per_shard = await asyncio.gather(*(ray_calls.call(s, "report",
                                                          timeout_s=self.config.call_timeout_s)
                                           for s in self.shards))
        resolutions = [Resolution(**{**r, "seen": tuple(r["seen"])})
                       for shard in per_shard for r in shard]
        return [{**dataclasses.asdict(row), "treated_rate": row.treated_rate,
                 "holdout_rate": row.holdout_rate, "lift": row.lift}
                for row in lift_report(resolutions)]

    async def checkpoint(self) -> list[int]:
        """Snapshot every shard now (``ShardActorBody.checkpoint``): the customers each saved.
        A shard that cannot answers with its error (``EngineUnavailable``: it is down)."""
        saved: list[int] = await asyncio.gather(
            *(ray_calls.call(s, "checkpoint", timeout_s=self.config.call_timeout_s)
              for s in self.shards))
        return saved

    async def health(self) -> dict[str, Any]:
        async def report(handle: Any) -> dict[str, Any]:
            try:
                result: dict[str, Any] = await ray_calls.call(handle, "health", timeout_s=5.0)
                return {"alive": True, **result}
            except EngineUnavailable as exc:
                return {"alive": False, "error": str(exc)}

        groups = {"routers": self.routers, "shards": self.shards,
                  "arbitrators": self.arbitrators}
        out: dict[str, Any] = {"restarts": dict(self.restarts), "purged": dict(self.purged)}
        for key, group in groups.items():
            out[key] = list(await asyncio.gather(*(report(h) for h in group)))
        return out

    async def shutdown(self) -> None:
        """Stop supervising, snapshot every shard, then stop every actor."""
        for task in (self._health_task, self._purge_task):
            if task is not None:
                task.cancel()
        if self.edge_ports is not None:  # no new requests; those in flight finish first
            await asyncio.gather(*(ray_calls.call(r, "stop_serving", EDGE_GRACE_S,
                                                  timeout_s=self.config.call_timeout_s)
                                   for r in self.routers), return_exceptions=True)
            self.edge_ports = None
        flushed = await asyncio.gather(
            *(ray_calls.call(s, "flush", timeout_s=self.config.call_timeout_s)
              for s in self.shards), return_exceptions=True)
        for i, result in enumerate(flushed):
            if isinstance(result, BaseException):
                log.error("supervisor: shard %d could not snapshot at shutdown: %s", i, result)
        for handle in self.routers + self.shards + self.arbitrators:
            ray_calls.kill(handle)
        self.routers, self.shards, self.arbitrators = [], [], []


SupervisorActor = ray.remote(SupervisorActorBody)


