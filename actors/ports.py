"""What the actors need from the edges, as Protocols; adapters provide the implementations.

Actors receive factories (picklable callables) for these, so that the actors package never
imports an adapter (import direction: adapters -> actors -> policies -> engine).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from ..engine.models import Treatment
from ..engine.store import StateStore


class TreatmentChannel(Protocol):
    """Sends one treatment, now. ``send`` carries the idempotency key with the treatment."""

    def send(self, treatment: Treatment) -> None: ...

    def close(self) -> None: ...


class RecordSink(Protocol):
    """Appends records that must not be lost (dead letters)."""

    def write(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


ChannelFactory = Callable[[], TreatmentChannel]
SinkFactory = Callable[[], RecordSink]
StoreFactory = Callable[[], StateStore]
