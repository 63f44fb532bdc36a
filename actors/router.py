"""RouterActor: validates events, routes each to its customer's shard, micro-batches, and
applies backpressure.

A ``submit_events`` call's valid events are split per shard into chunks that wait in that
shard's buffer; a buffer is flushed when it holds ``max_batch_events`` or after
``flush_interval_ms`` (0, the default: at once, if the shard's window has room).
At most ``max_inflight_batches`` batches per shard are unacknowledged; while that window is
full the buffer grows, and leaves as one batch when an acknowledgement frees the window, so
batches grow with the load (group commit). A router holding more than ``max_buffered_events``
refuses new work with a retry-after. An unacknowledged batch is re-sent (shards drop duplicates
by event id) until ``call_timeout_s`` runs out.

Each router also hosts the gRPC edge (``serve``): clients connect to the routers themselves,
which share one port, and a batch reaches its shards in one actor hop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import ray

from ..engine import codec
from ..engine.catalog import Catalog
from ..engine.clock import SystemClock
from ..engine.config import EngineConfig
from ..engine.errors import BackpressureError, EngineUnavailable, EventRejected
from ..engine.partitions import PartitionTable
from ..engine.signals import validate_wire_event
from . import gil, heap, ray_calls
from .lanes import SHARD_LANE_METHODS, ActorLanes
from .ports import EdgeFactory, EdgePorts, EdgeServer, SinkFactory

log = logging.getLogger(__name__)

# a submit's events for one shard, who waits for their acks, when it was sent to the router
# (by the gateway: None if unstamped) and taken in (``actors.way_in``), and how many of the
# events each partition got (the shard's journal needs them: counted here, where each event's
# partition is at hand, the shard saves a lookup per event in a table of its customers)
Chunk = tuple[list[Any], "asyncio.Future[list[list[Any]]]", float | None, float,
              dict[int, int]]
# Events validated between two looks at other calls: a request of 250 events held the loop
# ~2-3 ms, and an inbound Decide arriving meanwhile waited for all of it (stop 22, at 10,000
# events/s: Decide p50 3.2-3.6 ms with chunks of 64 against 4.2-4.8)
VALIDATE_CHUNK = 64


class RouterActorBody:
    def __init__(self, index: int, config_json: str, catalog_wire: dict[str, Any],
                 table_wire: dict[str, Any], dead_letter_factory: SinkFactory,
                 edge_factory: EdgeFactory | None = None) -> None:
        heap.collect_rarely()  # a request's events live until it is answered
        self.index = index
        self.edge_factory = edge_factory
        self.edge: EdgeServer | None = None
        self.edge_ports: EdgePorts | None = None
        self.config = EngineConfig.model_validate_json(config_json)
        gil.hand_over_every(self.config.gil_switch_interval_ms)
        self.settings = self.config.router
        self.signal_schemas = Catalog.from_wire(catalog_wire).signal_schemas
        self.dead_letters = dead_letter_factory()
        self.clock = SystemClock()
        self.table = PartitionTable.from_wire(table_wire)
        self.shards = ActorLanes(ray_calls.ActorDirectory(
            "shard", self.config.num_shards, self.config.namespace), SHARD_LANE_METHODS)
        self._buffers: dict[int, list[Chunk]] = {}
        self._buffered_counts: dict[int, int] = {}
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._inflight: dict[int, int] = {}  # unacknowledged batches per shard
        self.buffered = 0
        self.stats = {"received": 0, "rejected": 0, "batches": 0, "resends": 0, "refused": 0}
        # What is alive now (modules, Ray's state: ~84,000 objects) lives as long as the
        # process: out of the collector's sight, a full collection no longer rescans it
        # (loadtest at 10,000 events/s: full collections of 29-41 ms under load before; of
        # 0.9-6.6 ms after)
        heap.freeze_resident()

    async def submit_events(self, events: list[Any], sent_at_s: float | None = None
                            ) -> list[list[Any]]:
        """Validate, route and deliver wire events; one ack each, in order. The gRPC edge in
        this router's process calls it directly (``serve``); ``sent_at_s``: when the caller
        sent them (``actors.way_in``). Raises ``BackpressureError`` when the router is full."""
        received_s = time.time()
        n = len(events)
        if self.buffered + n > self.settings.max_buffered_events:
            self.stats["refused"] += n
            raise BackpressureError("router is full", retry_after_s=self.settings.resend_backoff_s)
        self.stats["received"] += n
        self.buffered += n  # held from here: validating lets other requests in
        try:
            return await self._route(events, sent_at_s, received_s)
        finally:
            self.buffered -= n

    async def _route(self, events: list[Any], sent_at_s: float | None, received_s: float
                     ) -> list[list[Any]]:
        results: list[list[Any] | None] = [None] * len(events)
        per_shard: dict[int, tuple[list[int], list[Any], dict[int, int]]] = {}
        partition_of, owners = self.table.partition, self.table.owners
        for i, event in enumerate(events):
            if i and i % VALIDATE_CHUNK == 0:
                await asyncio.sleep(0)  # an inbound Decide waits for a chunk, not the request
            try:
                validate_wire_event(event, self.signal_schemas)
            except EventRejected as exc:
                results[i] = [codec.REJECTED, exc.reason, exc.field]
                self._dead_letter(event, exc)
                continue
            partition = partition_of(event[1])  # the customer id, a valid one now
            shard = owners[partition]
            entry = per_shard.get(shard)  # (not setdefault: its default is built every call)
            if entry is None:
                entry = per_shard[shard] = ([], [], {})
            positions, chunk, counts = entry
            positions.append(i)
            chunk.append(event)
            counts[partition] = counts.get(partition, 0) + 1
        loop = asyncio.get_running_loop()
        waits = []
        for shard, (positions, chunk, counts) in per_shard.items():
            future: asyncio.Future[list[list[Any]]] = loop.create_future()
            self._enqueue(shard, (chunk, future, sent_at_s, received_s, counts))
            waits.append((positions, future))
        for positions, future in waits:
            for pos, ack in zip(positions, await future, strict=True):
                results[pos] = ack
        return results  # type: ignore[return-value]  # every position is filled

    def _dead_letter(self, event: Any, exc: EventRejected) -> None:
        self.stats["rejected"] += 1
        try:
            self.dead_letters.write({"at_ms": self.clock.now_ms(), "stage": "router",
                                     "reason": exc.reason, "field": exc.field,
                                     "event_id": exc.event_id, "event": event})
        except Exception:  # the dead-letter sink must never stop routing
            log.exception("router %d: dead-letter write failed", self.index)

    def _enqueue(self, shard: int, chunk: Chunk) -> None:
        self._buffers.setdefault(shard, []).append(chunk)
        count = self._buffered_counts.get(shard, 0) + len(chunk[0])
        self._buffered_counts[shard] = count
        if count >= self.settings.max_batch_events or self.settings.flush_interval_ms == 0:
            self._flush(shard)
        elif shard not in self._timers:
            self._timers[shard] = asyncio.get_running_loop().call_later(
                self.settings.flush_interval_ms / 1000, self._flush, shard)

    def _flush(self, shard: int) -> None:
        """Send the shard's buffer, in batches of at most ``max_batch_events``, while its window
        of ``max_inflight_batches`` has room; the rest goes when a batch is acknowledged.
        Under load, batches grow with the shard's backlog (fewer, larger calls and journal
        transactions); when idle they leave after the flush interval."""
        timer = self._timers.pop(shard, None)
        if timer is not None:
            timer.cancel()
        chunks = self._buffers.get(shard, [])
        while chunks and self._inflight.get(shard, 0) < self.settings.max_inflight_batches:
            taken = count = 0
            while taken < len(chunks) and (taken == 0 or count + len(chunks[taken][0])
                                           <= self.settings.max_batch_events):
                count += len(chunks[taken][0])
                taken += 1
            batch, chunks = chunks[:taken], chunks[taken:]
            self._buffered_counts[shard] -= count
            self._inflight[shard] = self._inflight.get(shard, 0) + 1
            asyncio.get_running_loop().create_task(self._send(shard, batch))
        self._buffers[shard] = chunks

    async def _send(self, shard: int, chunks: list[Chunk]) -> None:
        events = [event for chunk in chunks for event in chunk[0]]
        _, _, sent_at_s, received_s, counts = chunks[0]  # the path is its oldest chunk's
        if len(chunks) > 1:
            counts = dict(counts)
            for chunk in chunks[1:]:
                for partition, count in chunk[4].items():
                    counts[partition] = counts.get(partition, 0) + count
        try:
            acks = await self._deliver(shard, events, counts, sent_at_s, received_s)
        except Exception as exc:  # task boundary: every caller must hear back
            log.exception("router %d: delivery to shard %d failed", self.index, shard)
            acks = [[codec.RETRY, f"router could not deliver to shard {shard}: {exc}"]
                    ] * len(events)
        finally:
            self._inflight[shard] -= 1
            if self._buffers.get(shard):
                self._flush(shard)  # what waited for the window goes now, as one batch
        offset = 0
        for chunk_events, future, *_ in chunks:
            if not future.done():
                future.set_result(acks[offset:offset + len(chunk_events)])
            offset += len(chunk_events)

    async def _deliver(self, shard: int, events: list[Any], counts: dict[int, int],
                       sent_at_s: float | None, received_s: float) -> list[list[Any]]:
        """One batch to its shard, with its events per partition (``counts``), re-sent until
        acknowledged or ``call_timeout_s`` runs out; stamped with when it reached the router
        and when it left (each try)."""
        payload = codec.pack(codec.EVENTS, events)
        partitions = codec.flat_counts(counts)
        deadline = time.monotonic() + self.config.call_timeout_s
        self.stats["batches"] += 1
        while True:
            remaining = deadline - time.monotonic()
            try:
                reply = await self.shards.call(shard, "submit", payload,
                                               [sent_at_s, received_s, time.time()],
                                               partitions, timeout_s=max(remaining, 0.001))
                acks: list[list[Any]] = codec.unpack(reply, codec.ACKS)
                return acks
            except EngineUnavailable as exc:
                if time.monotonic() + self.settings.resend_backoff_s >= deadline:
                    log.warning("router %d: shard %d unavailable: %s", self.index, shard, exc)
                    return [[codec.RETRY, f"shard {shard} unavailable: {exc.reason}"]
                            ] * len(events)
                self.stats["resends"] += 1
                await asyncio.sleep(self.settings.resend_backoff_s)

    async def route_outcomes(self, items: list[Any]) -> list[list[Any]]:
        """Outcomes ``[treatment_id, customer_id, kind, at_ms]``, each to its customer's
        shard; one ack each, in order."""
        results: list[list[Any] | None] = [None] * len(items)
        per_shard: dict[int, tuple[list[int], list[Any]]] = {}
        for i, item in enumerate(items):
            if not (isinstance(item, list) and len(item) == 4 and isinstance(item[1], str)
                    and item[1]):
                results[i] = [codec.REJECTED, "an outcome is [treatment_id, customer_id, "
                              "outcome, at_ms]", "outcome"]
                continue
            positions, chunk = per_shard.setdefault(self.table.shard_of(item[1]), ([], []))
            positions.append(i)
            chunk.append(item)
        for shard, (positions, chunk) in per_shard.items():
            try:
                reply = await self.shards.call(shard, "record_outcomes",
                                               codec.pack(codec.OUTCOMES, chunk),
                                               timeout_s=self.config.call_timeout_s)
                acks = codec.unpack(reply, codec.ACKS)
            except EngineUnavailable as exc:
                acks = [[codec.RETRY, exc.reason]] * len(chunk)
            for pos, ack in zip(positions, acks, strict=True):
                results[pos] = ack
        return results  # type: ignore[return-value]  # every position is filled

    async def serve(self, ports: EdgePorts) -> EdgePorts:
        """Serve the edge (gRPC, and frames if on) in this process on ``ports`` (0: a free
        one); return the ports bound. Idempotent: the supervisor calls it after every health
        check, so a router Ray restarted serves again. Clients reach a router in one hop
        instead of two (through a gateway process, then an actor call)."""
        if self.edge is None:
            if self.edge_factory is None:
                raise RuntimeError(f"router {self.index} has no edge to serve")
            edge = self.edge_factory(self)
            self.edge_ports = await edge.start(ports)
            self.edge = edge
            heap.freeze_resident()  # the server's state lives as long as the process
        assert self.edge_ports is not None
        return self.edge_ports

    async def stop_serving(self, grace_s: float) -> None:
        """Stop taking requests; those in flight get ``grace_s`` to finish."""
        edge, self.edge = self.edge, None
        if edge is not None:
            await edge.stop(grace_s)

    async def serving(self) -> EdgePorts | None:
        """The ports this router serves (``None``: none, e.g. after Ray restarted it): the
        supervisor's check every ``health_interval_s``, cheaper than ``health``."""
        return self.edge_ports if self.edge is not None else None

    async def health(self) -> dict[str, Any]:
        ports = self.edge_ports
        return {"index": self.index, "buffered": self.buffered,
                "edge_port": None if ports is None else ports.grpc,
                "frames_port": None if ports is None else ports.frames, **self.stats}


RouterActor = ray.remote(RouterActorBody)
