"""Sequence: step A then step B (then C...) within a window, in event time.

Semantics (as in FlinkCEP's "relaxed contiguity, skip past last event"; no "any combination"):

- Other signals may come between the steps. A partial match takes the *first* event that fits
  its next step (at or after its last step, and less than ``window_s`` after its first step:
  the window is half-open).
- Every event of the first step starts a partial match; at most ``max_partials`` live at once
  (the oldest is dropped). Partials whose window has passed are dropped, also by a cleanup
  timer, so a silent customer keeps no partials.
- When a partial completes, the detector fires (subject to ``cooldown_s``) and skips past the
  match: every partial that started at or before its last event is discarded, and the event
  that completed the match starts nothing.
- A late event may start or extend a partial; steps already consumed are not replayed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field

from ..models import Moment
from ..signals import SignalRecord
from .base import BaseDetector, CustomerView, SignalMatch

# A partial match, as plain data: [start_ms, next_step, last_ms, [event ids]].
START, NEXT, LAST, IDS = range(4)


class Step(SignalMatch):
    """One step of a sequence."""


class SequenceDetector(BaseDetector):
    uses_timer = True

    kind: Literal["sequence"] = "sequence"
    steps: list[Step] = Field(min_length=2, max_length=8, description="In order")
    window_s: float = Field(gt=0, description="Last step less than this after the first")
    max_partials: int = Field(16, ge=1, le=256, description="Live partial matches per customer")

    def signal_types(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(step.signal for step in self.steps))

    def check(self, signals: Mapping[str, Any], *, file: str) -> None:
        for i, step in enumerate(self.steps):
            step.check_match(signals, file=file, item=self.id, prefix=f"steps.{i}.")

    def window_ms(self) -> int:
        return int(self.window_s * 1000)

    def detect(self, state: dict[str, Any], signal: SignalRecord,
               view: CustomerView) -> Moment | None:
        t = signal.occurred_at_ms
        frontier = max(state.get("T", t), t)
        state["T"] = frontier
        self.expire(state, frontier)
        partials: list[list[Any]] = state.setdefault("p", [])
        done: list[Any] | None = None
        for partial in partials:
            if (self.steps[partial[NEXT]].matches(signal) and partial[LAST] <= t
                    and t - partial[START] < self.window_ms()):
                partial[NEXT] += 1
                partial[LAST] = t
                partial[IDS].append(signal.event_id)
                if partial[NEXT] == len(self.steps):
                    done = partial
                    break
        if done is not None:
            state["p"] = [p for p in partials if p[START] > t]
            self._arm(state)
            if self.cooled_down(state, t):
                return self.make_moment(state, signal, done[IDS])
            return None
        if self.steps[0].matches(signal):
            partials.append([t, 1, t, [signal.event_id]])
            if len(partials) > self.max_partials:
                del partials[0]
        self._arm(state)
        return None

    def _arm(self, state: dict[str, Any]) -> None:
        """The cleanup timer: when the oldest partial's window closes."""
        partials = state.get("p")
        if partials:
            state["due"] = min(p[START] for p in partials) + self.window_ms()
        else:
            state.pop("due", None)

    def expire(self, state: dict[str, Any], horizon_ms: int) -> None:
        partials = state.get("p")
        if partials:
            floor = horizon_ms - self.window_ms()
            state["p"] = [p for p in partials if p[START] > floor]

    def on_time(self, state: dict[str, Any], now_ms: int, view: CustomerView) -> list[Moment]:
        self.expire(state, now_ms)
        self._arm(state)
        return []
