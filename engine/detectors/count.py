"""Count of matching signals within a sliding event-time window.

The window is half-open and ends at the detector's frontier T (the latest matching event time
seen): events in ``(T - window, T]`` count, so events at t and t + window are never together.
An out-of-order event counts if it falls in the current window; older ones are ignored.
State is incremental and bounded: only the ``at_least + 1`` latest times are kept (enough to
decide the condition and its reset exactly), kept sorted, pruned from the front.
Hysteresis re-arms when the window, before the new event, held fewer than ``at_least``.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Any, Literal

from pydantic import Field

from ..models import Moment
from ..signals import SignalRecord
from .base import CustomerView, SignalDetector, advance_window


def prune_sorted(times: list[Any], ids: list[str], floor_ms: float) -> None:
    """Drop entries of the sorted ``times`` (with their ``ids``) at or before ``floor_ms``."""
    cut = bisect_right(times, floor_ms)
    if cut:
        del times[:cut]
        del ids[:cut]


class CountDetector(SignalDetector):
    kind: Literal["count"] = "count"
    window_s: float = Field(gt=0, description="Sliding event-time window (half-open)")
    at_least: int = Field(1, ge=1, le=10_000, description="Fires at this many matching events")

    def window_ms(self) -> int:
        return int(self.window_s * 1000)

    def detect(self, state: dict[str, Any], signal: SignalRecord,
               view: CustomerView) -> Moment | None:
        if not self.matches(signal):
            return None
        t = signal.occurred_at_ms
        floor = advance_window(state, t, self.window_ms())
        if floor is None:
            return None
        times: list[int] = state.setdefault("ts", [])
        ids: list[str] = state.setdefault("ids", [])
        prune_sorted(times, ids, floor)
        before = len(times)
        at = bisect_right(times, t)
        times.insert(at, t)
        ids.insert(at, signal.event_id)
        if len(times) > self.at_least + 1:
            del times[0]
            del ids[0]
        if before < self.at_least:
            state.pop("armed", None)  # the condition had reset before this event
        if self.gate(state, before + 1 >= self.at_least, t):
            return self.make_moment(state, signal, ids[-self.at_least:])
        return None

    def expire(self, state: dict[str, Any], horizon_ms: int) -> None:
        if state.get("ts") and state["ts"][-1] <= horizon_ms - self.window_ms():
            state["ts"], state["ids"] = [], []

