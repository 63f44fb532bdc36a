"""What the actors need from the edges, as Protocols; adapters provide the implementations.

Actors receive factories (picklable callables) for these, so that the actors package never
imports an adapter (import direction: adapters -> actors -> policies -> engine).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Protocol

from ..engine.models import Treatment
from ..engine.store import StateStore


class TreatmentChannel(Protocol):
    """Sends one treatment, now. ``send`` carries the idempotency key with the treatment."""

    def send(self, treatment: Treatment) -> None: ...

    # Which of these keys the channel has taken already, as far as it can tell: a shard killed
    # between a send and its "sent" mark resends after its restart, and this keeps the resend
    # from reaching the channel twice.
    def delivered(self, keys: Collection[str]) -> set[str]: ...

    def close(self) -> None: ...


class RecordSink(Protocol):
    """Appends records that must not be lost (dead letters)."""

    def write(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


ChannelFactory = Callable[[], TreatmentChannel]
SinkFactory = Callable[[], RecordSink]
StoreFactory = Callable[[], StateStore]


class RouterFront(Protocol):
    """What an edge in a router's process calls on that router, directly (no actor hop)."""

    async def submit_events(self, events: list[Any], sent_at_s: float | None = None
                            ) -> list[list[Any]]: ...

    async def route_outcomes(self, items: list[Any]) -> list[list[Any]]: ...


@dataclass(frozen=True)
class EdgePorts:
    """The ports every router serves: gRPC's, and the frames edge's (None: off)."""

    grpc: int
    frames: int | None


class EdgeServer(Protocol):
    """A server that takes requests inside a router's process (the gRPC adapter). Every
    router serves the same ports; the kernel spreads connections over them (SO_REUSEPORT).
    A port 0 is bound to a free one in the same step, so that no other process can take it
    between a choice and a bind."""

    async def start(self, ports: EdgePorts) -> EdgePorts: ...  # the ports bound

    async def stop(self, grace_s: float) -> None: ...


EdgeFactory = Callable[[RouterFront], EdgeServer]


class ShardFront(Protocol):
    """What a shard's own server (``ShardServer``) calls on that shard, in its process."""

    index: int

    def shard_of(self, customer_id: str) -> int: ...

    async def take_direct(self, events: list[Any], packed: bytes | None, arrived_s: float,
                          taken_s: float | None = None) -> list[list[Any]]: ...

    async def decide(self, customer_id: str, channel: str | None, present: bool = False,
                     sent_at_s: float | None = None) -> bytes: ...


class ShardServer(Protocol):
    """A server in a shard's process that takes submits and Decides about that shard's
    customers (the frames adapter), so a client that knows the routes skips the router."""

    async def start(self) -> str: ...  # the address clients reach it at, host:port

    async def stop(self, grace_s: float) -> None: ...

    @property
    def served(self) -> int: ...  # calls answered


ShardServerFactory = Callable[[ShardFront], ShardServer]
