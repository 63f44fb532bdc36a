"""The Python client: ``ShushClient`` (blocking) and ``AsyncShushClient`` (asyncio).

Both give every event a client-generated ``event_id`` (unless it has one), send events in
batches, and retry safely: a retried batch carries the same ids, so the engine applies each
event once. Events the engine refuses for good come back as ``Rejection``s with the reason and
the field; events it could not take this time (``RETRY``) are re-sent.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import AsyncIterable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import grpc

from ..engine.clock import to_ms
from ..engine.models import Signal
from .grpc import convert
from .grpc import shush_pb2 as pb
from .grpc import shush_pb2_grpc as pb_grpc

RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED,
                       grpc.StatusCode.DEADLINE_EXCEEDED})

EventLike = Signal | Mapping[str, Any]


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


def new_event_id() -> str:
    return uuid.uuid4().hex


def to_proto_event(event: EventLike) -> pb.Event:
    """Accept a ``Signal`` or a mapping; fill in ``event_id`` and ``occurred_at_ms``."""
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
    return convert.event_to_proto(data)


def _batches(events: Iterable[EventLike], size: int) -> Iterator[list[pb.Event]]:
    batch: list[pb.Event] = []
    for event in events:
        batch.append(to_proto_event(event))
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _result(batch: Sequence[pb.Event], reply: pb.SubmitReply) -> tuple[SubmitResult, list[str]]:
    result = SubmitResult(accepted=reply.accepted, duplicates=reply.duplicates,
                          event_ids=[e.event_id for e in batch])
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
        removed=[(r.action_id, r.policy, r.reason) for r in reply.removed])


def _backoff_s(attempt: int, base_s: float) -> float:
    return min(base_s * 2 ** attempt, 5.0) * (0.5 + random.random() / 2)


def _channel_options() -> list[tuple[str, int]]:
    return [("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024)]


class ShushClient:
    """Blocking client. ``with ShushClient("127.0.0.1:50051") as client: client.submit(...)``"""

    def __init__(self, target: str, *, batch_size: int = 1000, timeout_s: float = 60.0,
                 max_attempts: int = 8, backoff_s: float = 0.05) -> None:
        self.target = target
        self.batch_size = batch_size
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self._channel = grpc.insecure_channel(target, options=_channel_options())
        self._stub = pb_grpc.ShushStub(self._channel)

    def __enter__(self) -> ShushClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: Any, request: Any) -> Any:
        for attempt in range(self.max_attempts):
            try:
                return method(request, timeout=self.timeout_s)
            except grpc.RpcError as exc:
                if exc.code() not in RETRYABLE or attempt == self.max_attempts - 1:
                    raise
                time.sleep(_backoff_s(attempt, self.backoff_s))
        raise AssertionError("unreachable")

    def _submit_batch(self, batch: list[pb.Event]) -> SubmitResult:
        total = SubmitResult(event_ids=[e.event_id for e in batch])
        pending = batch
        for attempt in range(self.max_attempts):
            reply = self._call(self._stub.SubmitEvents, pb.EventBatch(events=pending))
            result, retry = _result(pending, reply)
            total.accepted += result.accepted
            total.duplicates += result.duplicates
            total.rejected.extend(result.rejected)
            if not retry:
                return total
            again = set(retry)
            pending = [e for e in pending if e.event_id in again]
            time.sleep(_backoff_s(attempt, self.backoff_s))
        raise TimeoutError(f"{len(pending)} events still not taken after "
                           f"{self.max_attempts} attempts")

    def submit(self, events: Iterable[EventLike]) -> SubmitResult:
        """Send events in batches; return what was accepted, duplicated and rejected."""
        total = SubmitResult()
        for batch in _batches(events, self.batch_size):
            total.merge(self._submit_batch(batch))
        return total

    def send(self, event: EventLike) -> SubmitResult:
        return self.submit([event])

    def stream(self, events: Iterable[EventLike]) -> SubmitResult:
        """One client stream of batches (no per-batch retry: use ``submit`` for that)."""
        batches = list(_batches(events, self.batch_size))
        reply = self._stub.StreamEvents(iter(pb.EventBatch(events=b) for b in batches),
                                        timeout=self.timeout_s)
        result, _ = _result([e for b in batches for e in b], reply)
        return result

    def decide(self, customer_id: str, channel: str | None = None) -> DecideResult:
        return _decide_result(self._call(self._stub.Decide, pb.DecideRequest(
            customer_id=customer_id, channel=channel or "")))

    def set_lever(self, action_id: str, lever: float) -> dict[str, float]:
        reply = self._call(self._stub.SetLever, pb.SetLeverRequest(action_id=action_id,
                                                                   lever=lever))
        return dict(reply.levers)

    def levers(self) -> dict[str, float]:
        return dict(self._call(self._stub.GetLevers, pb.LeversRequest()).levers)

    def explain(self, customer_id: str) -> list[dict[str, Any]]:
        reply = self._call(self._stub.Explain, pb.ExplainRequest(customer_id=customer_id))
        decisions: list[dict[str, Any]] = json.loads(reply.decisions_json)
        return decisions

    def health(self) -> tuple[bool, dict[str, Any]]:
        reply = self._call(self._stub.Health, pb.HealthRequest())
        return reply.serving, json.loads(reply.detail_json or "{}")


class AsyncShushClient:
    """The asyncio variant of ``ShushClient``, with the same retry rules."""

    def __init__(self, target: str, *, batch_size: int = 1000, timeout_s: float = 60.0,
                 max_attempts: int = 8, backoff_s: float = 0.05) -> None:
        self.batch_size = batch_size
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self._channel = grpc.aio.insecure_channel(target, options=_channel_options())
        self._stub = pb_grpc.ShushStub(self._channel)

    async def __aenter__(self) -> AsyncShushClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def _call(self, method: Any, request: Any) -> Any:
        for attempt in range(self.max_attempts):
            try:
                return await method(request, timeout=self.timeout_s)
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in RETRYABLE or attempt == self.max_attempts - 1:
                    raise
                await asyncio.sleep(_backoff_s(attempt, self.backoff_s))
        raise AssertionError("unreachable")

    async def submit_batch(self, batch: list[pb.Event]) -> SubmitResult:
        total = SubmitResult(event_ids=[e.event_id for e in batch])
        pending = batch
        for attempt in range(self.max_attempts):
            reply = await self._call(self._stub.SubmitEvents, pb.EventBatch(events=pending))
            result, retry = _result(pending, reply)
            total.accepted += result.accepted
            total.duplicates += result.duplicates
            total.rejected.extend(result.rejected)
            if not retry:
                return total
            again = set(retry)
            pending = [e for e in pending if e.event_id in again]
            await asyncio.sleep(_backoff_s(attempt, self.backoff_s))
        raise TimeoutError(f"{len(pending)} events still not taken after "
                           f"{self.max_attempts} attempts")

    async def submit(self, events: Iterable[EventLike]) -> SubmitResult:
        total = SubmitResult()
        for batch in _batches(events, self.batch_size):
            total.merge(await self.submit_batch(batch))
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

        reply = await self._stub.StreamEvents(batches(), timeout=self.timeout_s)
        return _result(sent, reply)[0]

    async def decide(self, customer_id: str, channel: str | None = None) -> DecideResult:
        return _decide_result(await self._call(self._stub.Decide, pb.DecideRequest(
            customer_id=customer_id, channel=channel or "")))

    async def set_lever(self, action_id: str, lever: float) -> dict[str, float]:
        reply = await self._call(self._stub.SetLever,
                                 pb.SetLeverRequest(action_id=action_id, lever=lever))
        return dict(reply.levers)

    async def health(self) -> tuple[bool, dict[str, Any]]:
        reply = await self._call(self._stub.Health, pb.HealthRequest())
        return reply.serving, json.loads(reply.detail_json or "{}")
