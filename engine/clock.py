"""Injectable clocks. Engine time is integer milliseconds since the Unix epoch (UTC)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    follows_events: bool

    def now_ms(self) -> int: ...

    def observe(self, event_ms: int) -> None:
        """An event of this time was applied (only an event-time clock moves)."""


class SystemClock:
    """Wall-clock time."""

    follows_events = False

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def observe(self, event_ms: int) -> None:
        pass


class ManualClock:
    """A clock that moves only when told: tests drive timers and sweeps with it."""

    follows_events = False

    def __init__(self, start_ms: int = 0) -> None:
        self._now_ms = start_ms

    def observe(self, event_ms: int) -> None:
        pass

    def now_ms(self) -> int:
        return self._now_ms

    def set(self, now_ms: int) -> None:
        if now_ms < self._now_ms:
            raise ValueError(f"a ManualClock does not go back ({now_ms} < {self._now_ms})")
        self._now_ms = now_ms

    def advance(self, delta_ms: int) -> None:
        self.set(self._now_ms + delta_ms)


class EventTimeClock:
    """Time follows the events (replays): now is the latest event time seen, or later if told.

    A replay of months of events then runs timers, sweeps and decay as they would have run.
    """

    follows_events = True

    def __init__(self, start_ms: int = 0) -> None:
        self._now_ms = start_ms

    def now_ms(self) -> int:
        return self._now_ms

    def observe(self, event_ms: int) -> None:
        if event_ms > self._now_ms:
            self._now_ms = event_ms


def make_clock(kind: str) -> SystemClock | EventTimeClock:
    """The engine's clock by configuration name: ``system`` or ``event`` (replays)."""
    if kind == "event":
        return EventTimeClock()
    return SystemClock()


def to_ms(moment: datetime) -> int:
    """Milliseconds since the epoch; a naive datetime is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)
