"""An in-memory capture of treatments, for tests of the shard core and the demo."""

from __future__ import annotations

from ...engine.models import Treatment


class MemoryChannel:
    def __init__(self) -> None:
        self.sent: list[Treatment] = []

    def send(self, treatment: Treatment) -> None:
        self.sent.append(treatment)

    def close(self) -> None:
        pass
