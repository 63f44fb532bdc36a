"""The Python client: ``ShushClient`` (blocking) and ``AsyncShushClient`` (asyncio).

Both give every event a client-generated ``event_id`` (unless it has one), send events in
batches (``SubmitPacked``: the engine's msgpack wire form, no protobuf message per event), and
retry safely: a retried batch carries the same ids, so the engine applies each event once.
Events the engine refuses for good come back as ``Rejection``s with the reason and the field;
events it could not take this time (``RETRY``) are re-sent.

Security: ``api_key=`` sends ``authorization: Bearer <key>`` with every call; TLS is on when
``tls=True`` or any certificate is given (``root_certificates`` to trust a private CA,
``client_certificate`` + ``client_key`` for mutual TLS; each as PEM bytes or a file path).
Refused credentials (``UNAUTHENTICATED``, ``PERMISSION_DENIED``) are never retried.

``AsyncShushClient(..., frames_target="host:port")`` sends its unary calls (submits, Decide,
outcomes, operator calls) over the engine's frames edge (``grpc.frames_port``): the same
messages, keys, TLS and errors without HTTP/2 (``adapters/frames``); ``stream`` stays on gRPC.
It then asks ``Routes`` and sends each submit's events and each Decide straight to their
customer's shard, with no router on the way; a shard gone or no longer the customer's owner
sends the call back through the routers. ``direct_to_shards=False`` keeps every call on the
routers (for a client that cannot reach the shards' ports).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
import uuid
from collections.abc import (
    AsyncIterable,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import grpc

from ..engine import codec
from ..engine.clock import to_ms
from ..engine.models import Signal
from ..engine.partitions import PartitionTable
from .decide_stream import BlockingDecideStreamer, DecideStreamer
from .frames.channel import FramesChannel, FramesStub, client_tls
from .grpc import convert
from .grpc import shush_pb2 as pb
from .grpc import shush_pb2_grpc as pb_grpc

RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED,
                       grpc.StatusCode.DEADLINE_EXCEEDED})

EventLike = Signal | Mapping[str, Any]
T = TypeVar("T")
Plan = Generator[tuple[Any, float], Any, T]  # yields (request, pause_s), receives replies


@dataclass(frozen=True, slots=True)
class Rejection:
    event_id: str
    reason: str
    field: str


@dataclass(slots=True)
class SubmitResult:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)

    def merge(self, other: SubmitResult) -> None:
        self.accepted += other.accepted
        self.duplicates += other.duplicates
        self.rejected.extend(other.rejected)
        self.event_ids.extend(other.event_ids)


@dataclass(frozen=True, slots=True)
class OutcomeRejection:
    index: int  # position in the batch given to ``record_outcomes``
    treatment_id: str
    reason: str
    field: str


@dataclass(slots=True)
class OutcomeResult:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[OutcomeRejection] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RankedAction:
    action_id: str
    moment_id: str
    p: float
    c: float
    v: float
    l: float  # noqa: E741 - the lever factor
    score: float


@dataclass(frozen=True, slots=True)
class DecideResult:
    customer_id: str
    winner: str | None
    ranked: list[RankedAction]
    removed: list[tuple[str, str, str]]
    treatment_id: str | None = None  # when the caller presented the winner


def _progress(reply: pb.RunProgress) -> dict[str, Any]:
    return {"run_id": reply.run_id, "state": reply.state, "selected": reply.selected,
            "injected": reply.injected, "treated": reply.treated, "skipped": reply.skipped,
            "errors": reply.errors, "started_ms": reply.started_ms or None,
            "finished_ms": reply.finished_ms or None}


def new_event_id() -> str:
    return uuid.uuid4().hex


def _event_fields(event: EventLike) -> dict[str, Any]:
    """A ``Signal`` or a mapping as a dict, ``event_id`` and ``occurred_at_ms`` filled in."""
    if isinstance(event, Signal):
        data: dict[str, Any] = event.model_dump()
    else:
        data = dict(event)
    data.setdefault("event_id", new_event_id())
    if "occurred_at_ms" not in data:
        when = data.pop("occurred_at", None)
        data["occurred_at_ms"] = (to_ms(when) if isinstance(when, datetime)
                                  else int(when) if when is not None
                                  else time.time_ns() // 1_000_000)
    data.setdefault("customer_id", "")
    data.setdefault("type", "")
    return data


def to_proto_event(event: EventLike) -> pb.Event:
    """Accept a ``Signal`` or a mapping; fill in ``event_id`` and ``occurred_at_ms``."""
    return convert.event_to_proto(_event_fields(event))


def to_wire_event(event: EventLike) -> list[Any]:
    """``to_proto_event`` in the engine's wire form (what ``SubmitPacked`` carries)."""
    data = _event_fields(event)
    attributes = dict(data.get("attributes", {}))
    for name, value in attributes.items():
        convert.require_attribute_value(name, value)
    return [data["event_id"], data["customer_id"], data["type"], data["occurred_at_ms"],
            data.get("source", ""), attributes]


def _batches(events: Iterable[EventLike], size: int,
             form: Callable[[EventLike], T]) -> Iterator[list[T]]:
    """Events in batches of ``size``, each event in the ``form`` of its request."""
    batch: list[T] = []
    for event in events:
        batch.append(form(event))
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _result(event_ids: list[str], reply: pb.SubmitReply) -> tuple[SubmitResult, list[str]]:
    result = SubmitResult(accepted=reply.accepted, duplicates=reply.duplicates,
                          event_ids=event_ids)
    retry: list[str] = []
    for ack in reply.acks:
        if ack.status == pb.REJECTED:
            result.rejected.append(Rejection(ack.event_id, ack.reason, ack.field))
        elif ack.status == pb.RETRY:
            retry.append(ack.event_id)
    return result, retry


def _decide_result(reply: pb.DecideReply) -> DecideResult:
    return DecideResult(
        customer_id=reply.customer_id, winner=reply.winner or None,
        ranked=[RankedAction(r.action_id, r.moment_id, r.p, r.c, r.v, r.l, r.score)
                for r in reply.ranked],
        removed=[(r.action_id, r.policy, r.reason) for r in reply.removed],
        treatment_id=reply.treatment_id or None)


def _backoff_s(attempt: int, base_s: float) -> float:
    return min(base_s * 2 ** attempt, 5.0) * (0.5 + random.random() / 2)


def _channel_options(server_name: str | None = None) -> list[tuple[str, Any]]:
    options: list[tuple[str, Any]] = [("grpc.max_receive_message_length", 64 * 1024 * 1024),
                                      ("grpc.max_send_message_length", 64 * 1024 * 1024)]
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    return options


Pem = bytes | str | Path


def _pem(value: Pem | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return Path(value).read_bytes()


@dataclass(frozen=True, slots=True)
class Connection:
    """How a client reaches the server: credentials, TLS material, channel options."""

    target: str
    metadata: tuple[tuple[str, str], ...]
    credentials: grpc.ChannelCredentials | None
    options: list[tuple[str, Any]]

    @classmethod
    def make(cls, target: str, *, api_key: str | None, tls: bool,
             root_certificates: Pem | None, client_certificate: Pem | None,
             client_key: Pem | None, server_name: str | None) -> Connection:
        if (client_certificate is None) != (client_key is None):
            raise ValueError("client_certificate and client_key go together (mutual TLS)")
        metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        secure = tls or root_certificates is not None or client_certificate is not None
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_pem(root_certificates), private_key=_pem(client_key),
            certificate_chain=_pem(client_certificate)) if secure else None
        options = [*_channel_options(server_name), ("grpc.use_local_subchannel_pool", 1)]
        return cls(target, metadata, credentials, options)

    # Each channel its own TCP connection (not grpc's process-wide pool): the server's
    # routers share one port, and the kernel gives each connection to one of them.
    def channel(self) -> grpc.Channel:
        if self.credentials is None:
            return grpc.insecure_channel(self.target, options=self.options)
        return grpc.secure_channel(self.target, self.credentials, options=self.options)

    def aio_channel(self) -> grpc.aio.Channel:
        if self.credentials is None:
            return grpc.aio.insecure_channel(self.target, options=self.options)
        return grpc.aio.secure_channel(self.target, self.credentials, options=self.options)


def to_proto_outcome(outcome: Mapping[str, Any]) -> pb.Outcome:
    """A mapping with treatment_id, customer_id, outcome and (optional) at_ms."""
    data = dict(outcome)
    if data.get("at_ms") is None:
        data["at_ms"] = time.time_ns() // 1_000_000
    return convert.outcome_to_proto(data)


def _outcome_result(offsets: Sequence[int], batch: Sequence[pb.Outcome],
                    reply: pb.OutcomeReply) -> tuple[OutcomeResult, list[int]]:
    """The result of one reply, and the positions (in ``batch``) to send again."""
    result = OutcomeResult(accepted=reply.accepted, duplicates=reply.duplicates)
    retry: list[int] = []
    for ack in reply.acks:
        if ack.status == pb.REJECTED:
            result.rejected.append(OutcomeRejection(offsets[ack.index], ack.treatment_id,
                                                    ack.reason, ack.field))
        elif ack.status == pb.RETRY:
            retry.append(ack.index)
    return result, retry


# A direct Decide that fails so goes through a router, and the routes are asked again: the
# shard is gone (UNAVAILABLE) or no longer owns the customer (FAILED_PRECONDITION)
STALE_ROUTE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.FAILED_PRECONDITION,
                         grpc.StatusCode.UNIMPLEMENTED})
# what a call straight to a shard retries there: the shard is busy, not gone
AT_SHARD_RETRYABLE = RETRYABLE - STALE_ROUTE
ROUTES_RETRY_S = 1.0
# Routes are asked again this often anyway (a shard restarted on another port, partitions
# moved), and after ROUTES_RETRY_S while they name a server for some shards but not all (one
# was restarting): else that shard's customers would stay on the routers for good
ROUTES_MAX_AGE_S = 10.0


@dataclass(frozen=True, slots=True)
class ShardRoutes:
    """Which shard owns each customer, and where the shards that take Decides and submits
    directly listen."""

    table: PartitionTable
    addresses: dict[int, str]

    @classmethod
    def from_reply(cls, reply: pb.RoutesReply) -> ShardRoutes:
        table = PartitionTable(list(reply.owners) or [0], int(reply.version))
        return cls(table, {e.shard: e.address for e in reply.decide})

    def address_of(self, customer_id: str) -> str | None:
        return self.addresses.get(self.table.shard_of(customer_id)) if self.addresses else None

    def max_age_s(self) -> float:
        """How long these routes are used before ``Routes`` is asked again."""
        partial = self.addresses and not set(self.table.owners) <= self.addresses.keys()
        return ROUTES_RETRY_S if partial else ROUTES_MAX_AGE_S


class _ClientSettings:
    """What both clients share: batching, retries and the connection's credentials."""

    def __init__(self, target: str, *, batch_size: int = 1000, timeout_s: float = 60.0,
                 max_attempts: int = 8, backoff_s: float = 0.05, api_key: str | None = None,
                 tls: bool = False, root_certificates: Pem | None = None,
                 client_certificate: Pem | None = None, client_key: Pem | None = None,
                 server_name: str | None = None, connections: int = 2,
                 frames_target: str | None = None, direct_to_shards: bool = True) -> None:
        if connections < 1:
            raise ValueError(f"connections must be at least 1, got {connections}")
        self.target = target
        self.connections = connections  # calls take turns over them (see ``_stub``)
        self.batch_size = batch_size
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self._connection = Connection.make(
            target, api_key=api_key, tls=tls, root_certificates=root_certificates,
            client_certificate=client_certificate, client_key=client_key,
            server_name=server_name)
        self._metadata = self._connection.metadata
        self.frames_target = frames_target
        self.direct_to_shards = direct_to_shards
        self._frames_tls = (client_tls(_pem(root_certificates), _pem(client_certificate),
                                       _pem(client_key))
                            if frames_target and self._connection.credentials is not None
                            else None)
        self._server_name = server_name

    def _take_turns(self, channels: Sequence[Any]) -> None:
        self._stubs = itertools.cycle([pb_grpc.ShushStub(c) for c in channels])

    def _stub(self) -> pb_grpc.ShushStub:
        """The next connection's stub: calls take turns, so they spread over the routers."""
        return next(self._stubs)

    # Retry plans: generators that yield (request, pause before sending it) and receive each
    # reply; the blocking and the asyncio client drive the same plans.
    def _submit_plan(self, batch: list[pb.Event]) -> Plan[SubmitResult]:
        return self._retry_plan(batch, [e.event_id for e in batch],
                                lambda events: pb.EventBatch(events=events))

    def _packed_plan(self, batch: list[list[Any]]) -> Plan[SubmitResult]:
        return self._retry_plan(batch, [str(e[0]) for e in batch],
                                lambda events: pb.PackedEvents(
                                    events=codec.pack(codec.EVENTS, events)))

    def _retry_plan(self, batch: list[Any], event_ids: list[str],
                    request: Any) -> Plan[SubmitResult]:
        """Send ``batch``, then again what came back ``RETRY`` (same ids), with backoff."""
        total = SubmitResult(event_ids=event_ids)
        pending, pending_ids, pause_s = batch, event_ids, 0.0
        for attempt in range(self.max_attempts):
            reply = yield request(pending), pause_s
            result, retry = _result(pending_ids, reply)
            total.accepted += result.accepted
            total.duplicates += result.duplicates
            total.rejected.extend(result.rejected)
            if not retry:
                return total
            again = set(retry)
            kept = [i for i, event_id in enumerate(pending_ids) if event_id in again]
            pending = [pending[i] for i in kept]
            pending_ids = [pending_ids[i] for i in kept]
            pause_s = _backoff_s(attempt, self.backoff_s)
        raise TimeoutError(f"{len(pending)} events still not taken after "
                           f"{self.max_attempts} attempts")

    def _outcomes_plan(self, outcomes: Iterable[Mapping[str, Any]]) -> Plan[OutcomeResult]:
        total = OutcomeResult()
        items = [to_proto_outcome(o) for o in outcomes]
        for start in range(0, len(items), self.batch_size):
            offsets = list(range(start, min(start + self.batch_size, len(items))))
            pause_s = 0.0
            for attempt in range(self.max_attempts):
                batch = [items[i] for i in offsets]
                reply = yield pb.OutcomeBatch(outcomes=batch), pause_s
                result, retry = _outcome_result(offsets, batch, reply)
                total.accepted += result.accepted
                total.duplicates += result.duplicates
                total.rejected.extend(result.rejected)
                if not retry:
                    break
                offsets = [offsets[i] for i in retry]
                if attempt == self.max_attempts - 1:
                    raise TimeoutError(f"{len(offsets)} outcomes still not taken after "
                                       f"{self.max_attempts} attempts")
                pause_s = _backoff_s(attempt, self.backoff_s)
        return total


class ShushClient(_ClientSettings):
    """Blocking client. ``with ShushClient("127.0.0.1:50051") as client: client.submit(...)``"""

    def __init__(self, target: str, **settings: Any) -> None:
        if settings.get("frames_target"):
            raise ValueError("frames_target is AsyncShushClient's: the frames edge is for "
                             "asyncio callers")
        super().__init__(target, **settings)
        self._channels = [self._connection.channel() for _ in range(self.connections)]
        self._take_turns(self._channels)
        # a Decide rides a stream on its connection, as the async client's do
        self._decide_streamers = [BlockingDecideStreamer(pb_grpc.ShushStub(c))
                                  for c in self._channels]
        self._decide_turns = itertools.cycle(self._decide_streamers)

    def __enter__(self) -> ShushClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for streamer in self._decide_streamers:
            streamer.close()
        for channel in self._channels:
            channel.close()

    def _call(self, method: Any, request: Any) -> Any:
        for attempt in range(self.max_attempts):
            try:
                return method(request, timeout=self.timeout_s, metadata=self._metadata)
            except grpc.RpcError as exc:
                if exc.code() not in RETRYABLE or attempt == self.max_attempts - 1:
                    raise
                time.sleep(_backoff_s(attempt, self.backoff_s))
        raise AssertionError("unreachable")

    def _drive(self, method: Any, plan: Plan[T]) -> T:
        """Run a retry plan: each request after its pause, each reply back to the plan."""
        reply = None
        while True:
            try:
                request, pause_s = plan.send(reply)
            except StopIteration as done:
                result: T = done.value
                return result
            time.sleep(pause_s)
            reply = self._call(method, request)

    def submit_batch(self, batch: list[pb.Event]) -> SubmitResult:
        """One batch of protobuf events (``SubmitEvents``), retried as ``submit`` does."""
        return self._drive(self._stub().SubmitEvents, self._submit_plan(batch))

    def submit_wire(self, batch: list[list[Any]]) -> SubmitResult:
        """One batch of wire events (``to_wire_event``) in one ``SubmitPacked`` call."""
        return self._drive(self._stub().SubmitPacked, self._packed_plan(batch))

    def submit(self, events: Iterable[EventLike]) -> SubmitResult:
        """Send events in batches; return what was accepted, duplicated and rejected."""
        total = SubmitResult()
        for batch in _batches(events, self.batch_size, to_wire_event):
            total.merge(self.submit_wire(batch))
        return total

    def send(self, event: EventLike) -> SubmitResult:
        return self.submit([event])

    def stream(self, events: Iterable[EventLike]) -> SubmitResult:
        """One client stream of batches (no per-batch retry: use ``submit`` for that)."""
        batches = list(_batches(events, self.batch_size, to_proto_event))
        reply = self._stub().StreamEvents(iter(pb.EventBatch(events=b) for b in batches),
                                        timeout=self.timeout_s, metadata=self._metadata)
        result, _ = _result([e.event_id for b in batches for e in b], reply)
        return result

    def record_outcomes(self, outcomes: Iterable[Mapping[str, Any]]) -> OutcomeResult:
        """Report what became of treatments (delivered, opened, clicked, accepted, rejected),
        in batches; outcomes the engine could not take this time are sent again."""
        return self._drive(self._stub().RecordOutcome, self._outcomes_plan(outcomes))

    def record_outcome(self, treatment_id: str, customer_id: str, outcome: str,
                       at_ms: int | None = None) -> OutcomeResult:
        return self.record_outcomes([{"treatment_id": treatment_id, "customer_id": customer_id,
                                      "outcome": outcome, "at_ms": at_ms}])

    def decide(self, customer_id: str, channel: str | None = None, *,
               present: bool = False) -> DecideResult:
        """Ranked actions for the customer now; ``present``: you show the winner, and Shush
        records it as a treatment whose outcomes you report with its ``treatment_id``."""
        return _decide_result(self._call(next(self._decide_turns), pb.DecideRequest(
            customer_id=customer_id, channel=channel or "", present=present)))

    def set_lever(self, action_id: str, lever: float) -> dict[str, float]:
        reply = self._call(self._stub().SetLever, pb.SetLeverRequest(action_id=action_id,
                                                                   lever=lever))
        return dict(reply.levers)

    def levers(self) -> dict[str, float]:
        return dict(self._call(self._stub().GetLevers, pb.LeversRequest()).levers)

    def checkpoint(self) -> int:
        """Snapshot every shard now (operator role); the customers saved."""
        return int(self._call(self._stub().Checkpoint, pb.CheckpointRequest()).saved)

    def explain(self, customer_id: str) -> list[dict[str, Any]]:
        reply = self._call(self._stub().Explain, pb.ExplainRequest(customer_id=customer_id))
        decisions: list[dict[str, Any]] = json.loads(reply.decisions_json)
        return decisions

    def start_run(self, moment: str, *, zips: Sequence[str] = (), regions: Sequence[str] = (),
                  segments: Sequence[str] = (), countries: Sequence[str] = (),
                  products_any: Sequence[str] = (), where: str = "", everyone: bool = False,
                  urgency: float = 0.0, rate_per_s: float = 0.0, bypass_soft_caps: bool = False,
                  dedup_key: str = "", run_id: str = "", purpose: str = "") -> dict[str, Any]:
        """Operator: inject ``moment`` into every customer the filter selects; its progress."""
        population = pb.PopulationFilter(zips=zips, regions=regions, segments=segments,
                                         countries=countries, products_any=products_any,
                                         where=where, everyone=everyone)
        reply = self._call(self._stub().StartRun, pb.StartRunRequest(
            run_id=run_id, population=population, moment=moment, urgency=urgency,
            rate_per_s=rate_per_s, bypass_soft_caps=bypass_soft_caps, dedup_key=dedup_key,
            purpose=purpose))
        return _progress(reply)

    def runs(self) -> list[dict[str, Any]]:
        """Operator: the progress of every emergency run."""
        return [_progress(p) for p in self._call(self._stub().ListRuns, pb.RunsRequest()).runs]

    def report(self) -> list[dict[str, Any]]:
        """Operator: treatments, outcomes and rates per action, and lift against the holdout."""
        reply = self._call(self._stub().Report, pb.ReportRequest())
        rows: list[dict[str, Any]] = json.loads(reply.report_json)
        return rows

    def health(self) -> tuple[bool, dict[str, Any]]:
        reply = self._call(self._stub().Health, pb.HealthRequest())
        return reply.serving, json.loads(reply.detail_json or "{}")


class AsyncShushClient(_ClientSettings):
    """The asyncio variant of ``ShushClient``, with the same settings and retry rules."""

    def __init__(self, target: str, **settings: Any) -> None:
        super().__init__(target, **settings)
        self._channels = [self._connection.aio_channel() for _ in range(self.connections)]
        self._take_turns(self._channels)
        self._streams = self._stubs  # streaming calls are gRPC's only
        # a Decide through a router rides a stream on its connection (``decide_stream``)
        self._decide_streamers = [DecideStreamer(pb_grpc.ShushStub(c)) for c in self._channels]
        self._decide_turns = itertools.cycle(self._decide_streamers)
        self._frames = [FramesChannel(self.frames_target, self._frames_tls, self._server_name)
                        for _ in range(self.connections)] if self.frames_target else []
        if self._frames:  # unary calls go over the frames edge
            self._stubs = itertools.cycle([FramesStub(c) for c in self._frames])
        self._routes: ShardRoutes | None = None  # where calls go directly (frames only)
        self._routes_due = 0.0  # monotonic time before which Routes is not asked again
        self._routes_stale_s = 0.0  # monotonic time from which the routes are asked again
        self._routes_asked = asyncio.Lock()
        self._shard_stubs: dict[str, FramesStub] = {}

    async def __aenter__(self) -> AsyncShushClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for streamer in self._decide_streamers:
            await streamer.close()
        for frames in [*self._frames, *(s.channel for s in self._shard_stubs.values())]:
            await frames.close()
        for channel in self._channels:
            await channel.close()

    async def _call(self, method: Any, request: Any,
                    retryable: frozenset[grpc.StatusCode] = RETRYABLE) -> Any:
        for attempt in range(self.max_attempts):
            try:
                return await method(request, timeout=self.timeout_s, metadata=self._metadata)
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in retryable or attempt == self.max_attempts - 1:
                    raise
                await asyncio.sleep(_backoff_s(attempt, self.backoff_s))
        raise AssertionError("unreachable")

    async def _drive(self, method: Any, plan: Plan[T],
                     through_router: Callable[[], Any] | None = None) -> T:
        """Send the plan's requests with ``method``. ``through_router``: ``method`` is a
        shard's, and this gives the routers' for the rest of the plan once a request finds
        the route stale (the shard gone, or no longer the owner of a customer)."""
        reply = None
        while True:
            try:
                request, pause_s = plan.send(reply)
            except StopIteration as done:
                result: T = done.value
                return result
            await asyncio.sleep(pause_s)
            if through_router is not None:
                try:
                    reply = await self._call(method, request, AT_SHARD_RETRYABLE)
                    continue
                except grpc.aio.AioRpcError as exc:
                    if exc.code() not in STALE_ROUTE:
                        raise
                    self._routes = None  # asked again, at most every ROUTES_RETRY_S
                    method, through_router = through_router(), None
            reply = await self._call(method, request)

    async def submit_batch(self, batch: list[pb.Event]) -> SubmitResult:
        """One batch of protobuf events (``SubmitEvents``), retried as ``submit`` does."""
        return await self._drive(self._stub().SubmitEvents, self._submit_plan(batch))

    async def submit_wire(self, batch: list[list[Any]]) -> SubmitResult:
        """One batch of wire events (``to_wire_event``) in one ``SubmitPacked`` call; over
        frames, when the routes name the shards, each shard's share straight to its shard
        instead (no router on the way: one process and one hop fewer per event)."""
        if self._frames and self.direct_to_shards:
            routes = await self._current_routes()
            if routes is not None and routes.addresses:
                return await self._submit_at_shards(batch, routes)
        return await self._drive(self._stub().SubmitPacked, self._packed_plan(batch))

    async def _submit_at_shards(self, batch: list[list[Any]], routes: ShardRoutes
                                ) -> SubmitResult:
        shares: dict[str | None, list[list[Any]]] = {}
        for event in batch:  # an event without a customer id goes to a router, to be refused
            customer_id = event[1] if len(event) > 1 else None
            address = (routes.address_of(customer_id)
                       if isinstance(customer_id, str) and customer_id else None)
            share = shares.get(address)
            if share is None:
                share = shares[address] = []
            share.append(event)
        results = await asyncio.gather(*(
            self._drive(self._stub().SubmitPacked, self._packed_plan(events))
            if address is None else
            self._drive(self._shard_stub(address).SubmitPacked, self._packed_plan(events),
                        through_router=lambda: self._stub().SubmitPacked)
            for address, events in shares.items()), return_exceptions=True)
        total = SubmitResult(event_ids=[str(e[0]) for e in batch])
        for result in results:  # the event ids stay in the batch's order
            if isinstance(result, BaseException):  # raised once every share is done
                raise result
            total.accepted += result.accepted
            total.duplicates += result.duplicates
            total.rejected.extend(result.rejected)
        return total

    async def submit(self, events: Iterable[EventLike]) -> SubmitResult:
        total = SubmitResult()
        for batch in _batches(events, self.batch_size, to_wire_event):
            total.merge(await self.submit_wire(batch))
        return total

    async def stream(self, events: AsyncIterable[EventLike]) -> SubmitResult:
        sent: list[pb.Event] = []

        async def batches() -> AsyncIterable[pb.EventBatch]:
            batch: list[pb.Event] = []
            async for event in events:
                batch.append(to_proto_event(event))
                if len(batch) >= self.batch_size:
                    sent.extend(batch)
                    yield pb.EventBatch(events=batch)
                    batch = []
            if batch:
                sent.extend(batch)
                yield pb.EventBatch(events=batch)

        reply = await next(self._streams).StreamEvents(batches(), timeout=self.timeout_s,
                                              metadata=self._metadata)
        return _result([e.event_id for e in sent], reply)[0]

    async def record_outcomes(self, outcomes: Iterable[Mapping[str, Any]]) -> OutcomeResult:
        return await self._drive(self._stub().RecordOutcome, self._outcomes_plan(outcomes))

    async def decide(self, customer_id: str, channel: str | None = None, *,
                     present: bool = False) -> DecideResult:
        """Over frames, straight to the customer's shard when the routes name it; else (or
        when that shard is gone or no longer owns the customer) through a router. Over gRPC,
        on the connection's ``DecideStream`` (half the router's CPU of a unary call)."""
        request = pb.DecideRequest(customer_id=customer_id, channel=channel or "",
                                   present=present)
        if self._frames and self.direct_to_shards:
            reply = await self._decide_at_shard(request)
            if reply is not None:
                return _decide_result(reply)
        if self._frames:  # the router's frames edge, which multiplexes its calls already
            return _decide_result(await self._call(self._stub().Decide, request))
        return _decide_result(await self._call(next(self._decide_turns), request))

    async def _decide_at_shard(self, request: pb.DecideRequest) -> pb.DecideReply | None:
        routes = await self._current_routes()
        address = routes.address_of(request.customer_id) if routes is not None else None
        if address is None:
            return None
        try:
            reply: pb.DecideReply = await self._shard_stub(address).Decide(
                request, timeout=self.timeout_s, metadata=self._metadata)
            return reply
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in STALE_ROUTE:
                raise
            self._routes = None  # asked again, at most every ROUTES_RETRY_S
            return None

    def _shard_stub(self, address: str) -> FramesStub:
        stub = self._shard_stubs.get(address)
        if stub is None:
            stub = self._shard_stubs[address] = FramesStub(
                FramesChannel(address, self._frames_tls, self._server_name))
        return stub

    async def _current_routes(self) -> ShardRoutes | None:
        routes = self._routes
        if routes is not None and time.monotonic() < self._routes_stale_s:
            return routes
        if self._routes_asked.locked():
            if routes is not None:
                return routes  # being asked again: the ones at hand meanwhile
        elif time.monotonic() < self._routes_due:
            return routes
        async with self._routes_asked:  # concurrent calls wait for one Routes call
            if ((self._routes is None or time.monotonic() >= self._routes_stale_s)
                    and time.monotonic() >= self._routes_due):
                fresh = await self._ask_routes()
                if fresh is not None:  # else the ones at hand, if any, until asked again
                    self._routes = fresh
                    self._routes_stale_s = time.monotonic() + fresh.max_age_s()
        return self._routes

    async def _ask_routes(self) -> ShardRoutes | None:
        self._routes_due = time.monotonic() + ROUTES_RETRY_S
        try:
            reply = await self._stub().Routes(pb.RoutesRequest(), timeout=self.timeout_s,
                                              metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAUTHENTICATED,
                              grpc.StatusCode.PERMISSION_DENIED):
                raise
            return None  # an engine without Routes, or none reachable: the routers
        return ShardRoutes.from_reply(reply)

    async def set_lever(self, action_id: str, lever: float) -> dict[str, float]:
        reply = await self._call(self._stub().SetLever,
                                 pb.SetLeverRequest(action_id=action_id, lever=lever))
        return dict(reply.levers)

    async def health(self) -> tuple[bool, dict[str, Any]]:
        reply = await self._call(self._stub().Health, pb.HealthRequest())
        return reply.serving, json.loads(reply.detail_json or "{}")

    async def levers(self) -> dict[str, float]:
        return dict((await self._call(self._stub().GetLevers, pb.LeversRequest())).levers)

    async def checkpoint(self) -> int:
        """Snapshot every shard now (operator role); the customers saved."""
        return int((await self._call(self._stub().Checkpoint, pb.CheckpointRequest())).saved)

    async def explain(self, customer_id: str) -> list[dict[str, Any]]:
        reply = await self._call(self._stub().Explain, pb.ExplainRequest(customer_id=customer_id))
        decisions: list[dict[str, Any]] = json.loads(reply.decisions_json)
        return decisions
