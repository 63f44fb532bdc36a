"""Step A *not* followed by step B within a window: fires by timer when the window closes.

Each A opens a pending window ``[a, a + window)``; a B at ``b`` with ``a <= b < a + window``
closes every window open at ``b``. A window still open when the clock (or a later event's time)
reaches ``a + window`` fires: a B exactly at ``a + window`` is too late (half-open). At most
``max_pending`` windows are kept (the oldest is dropped). ``cooldown_s`` limits re-firing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field

from ..models import Moment
from ..signals import SignalRecord
from .base import BaseDetector, CustomerView
from .sequence import Step


class NotFollowedByDetector(BaseDetector):
    uses_timer = True

    kind: Literal["not_followed_by"] = "not_followed_by"
    first: Step = Field(description="The step that opens a window")
    then: Step = Field(description="The step expected within the window")
    window_s: float = Field(gt=0, description="How long B may take after A")
    max_pending: int = Field(8, ge=1, le=256, description="Open windows per customer")

    def signal_types(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((self.first.signal, self.then.signal)))

    def check(self, signals: Mapping[str, Any], *, file: str) -> None:
        self.first.check_match(signals, file=file, item=self.id, prefix="first.")
        self.then.check_match(signals, file=file, item=self.id, prefix="then.")

    def window_ms(self) -> int:
        return int(self.window_s * 1000)

    def detect(self, state: dict[str, Any], signal: SignalRecord,
               view: CustomerView) -> Moment | None:
        t = signal.occurred_at_ms
        pending: list[list[Any]] = state.setdefault("p", [])  # [start_ms, event_id]
        if self.then.matches(signal):
            pending[:] = [p for p in pending if not p[0] <= t < p[0] + self.window_ms()]
        elif self.first.matches(signal):
            pending.append([t, signal.event_id])
            pending.sort(key=lambda p: p[0])
            if len(pending) > self.max_pending:
                del pending[0]
        self._arm(state)
        return None

    def _arm(self, state: dict[str, Any]) -> None:
        pending = state.get("p")
        if pending:
            state["due"] = pending[0][0] + self.window_ms()
        else:
            state.pop("due", None)

    def on_time(self, state: dict[str, Any], now_ms: int, view: CustomerView) -> list[Moment]:
        pending: list[list[Any]] = state.get("p", [])
        fired: list[Moment] = []
        while pending and pending[0][0] + self.window_ms() <= now_ms:
            start, event_id = pending.pop(0)
            closed_ms = start + self.window_ms()
            if self.cooled_down(state, closed_ms):
                fired.append(self.emit(state, view.customer_id, closed_ms, event_id,
                                       [event_id]))
        self._arm(state)
        return fired
