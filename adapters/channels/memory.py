"""An in-memory capture of treatments, for tests of the shard core and the demo."""

from __future__ import annotations

from collections.abc import Collection

from ...engine.models import Treatment


class MemoryChannel:
    def __init__(self) -> None:
        self.sent: list[Treatment] = []

    def send(self, treatment: Treatment) -> None:
        self.sent.append(treatment)

    def delivered(self, keys: Collection[str]) -> set[str]:
        return {t.idempotency_key for t in self.sent} & set(keys)

    def close(self) -> None:
        pass
