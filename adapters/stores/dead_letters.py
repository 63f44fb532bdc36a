"""Dead letters into the state store: what the engine refused, with the reason, kept."""

from __future__ import annotations

import time
from typing import Any

import msgpack

from ...engine.store import DeadLetterRow, StateStore


class StoreDeadLetters:
    """A ``RecordSink`` writing each record as a dead-letter row of ``kind``."""

    def __init__(self, store: StateStore, kind: str = "event") -> None:
        self.store = store
        self.kind = kind

    def write(self, record: dict[str, Any]) -> None:
        self.store.dead_letter([DeadLetterRow(
            kind=self.kind, reason=str(record.get("reason", "")),
            field=str(record.get("field", "")),
            payload=msgpack.packb(record, use_bin_type=True, default=str),
            at_ms=int(record.get("at_ms") or time.time() * 1000))])

    def close(self) -> None:
        self.store.close()


def open_dead_letters(url: str) -> StoreDeadLetters:
    from . import make_store

    return StoreDeadLetters(make_store(url))
