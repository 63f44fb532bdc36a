"""Distinct values of an attribute within a sliding event-time window.

E.g. three or more different error codes from one machine within 24 h: a looming failure.
Same window as ``count``: half-open ``(T - window, T]`` ending at the detector's frontier T.
State is incremental and bounded: for each value its latest time, at most ``at_least + 1``
values (the oldest leaves first, so the distinct count stays exact up to the threshold).
Hysteresis re-arms when the window, before the new event, held fewer than ``at_least`` values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field

from ..models import Moment
from ..signals import SignalRecord
from .base import CustomerView, SignalDetector, advance_window, require_attribute


class DistinctCountDetector(SignalDetector):
    kind: Literal["distinct"] = "distinct"
    attribute: str = Field(description="Attribute whose distinct values are counted")
    window_s: float = Field(gt=0, description="Sliding event-time window (half-open)")
    at_least: int = Field(2, ge=1, le=1024, description="Fires at this many distinct values")

    def check(self, signals: Mapping[str, Any], *, file: str) -> None:
        super().check(signals, file=file)
        require_attribute(signals, self.signal, self.attribute, ("string", "integer", "boolean"),
                          file=file, item=self.id, field="attribute")

    def detect(self, state: dict[str, Any], signal: SignalRecord,
               view: CustomerView) -> Moment | None:
        raw = signal.attributes.get(self.attribute)
        if raw is None or not self.matches(signal):
            return None
        t = signal.occurred_at_ms
        floor = advance_window(state, t, int(self.window_s * 1000))
        if floor is None:
            return None
        seen: dict[str, list[Any]] = state.setdefault("vals", {})  # value -> [at_ms, event_id]
        for stale in [v for v, (at, _) in seen.items() if at <= floor]:
            del seen[stale]
        value = str(raw)
        before = len(seen)
        had = seen.get(value)
        if had is None or had[0] < t:
            seen[value] = [t, signal.event_id]
        if len(seen) > self.at_least + 1:
            oldest = min(seen, key=lambda v: seen[v][0])
            del seen[oldest]
        after = before + (had is None)
        if before < self.at_least:  # the condition had reset before this event
            state.pop("armed", None)
        if self.gate(state, after >= self.at_least, t):
            evidence = [eid for _, eid in sorted(seen.values())]
            return self.make_moment(state, signal, evidence)
        return None

    def expire(self, state: dict[str, Any], horizon_ms: int) -> None:
        floor = horizon_ms - int(self.window_s * 1000)
        vals = state.get("vals")
        if vals and all(at <= floor for at, _ in vals.values()):
            state["vals"] = {}
