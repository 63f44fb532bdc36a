"""Absence / inactivity: no matching signal for ``period_s``, driven by a timer.

The clock starts at the latest matching signal (or at the first ``arm_on`` signal, e.g. an
account opening, when none has been seen). When the engine clock, or a later event's time,
reaches ``last + period`` the detector fires, even if the customer never sends anything again.
``hysteresis`` fires once per silence (the next matching signal re-arms it); ``interval`` fires
again every ``max(period_s, cooldown_s)`` while the silence lasts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field

from ..errors import CatalogError
from ..models import Moment
from ..signals import SignalRecord
from .base import CustomerView, SignalDetector


class AbsenceDetector(SignalDetector):
    uses_timer = True

    kind: Literal["absence"] = "absence"
    period_s: float = Field(gt=0, description="Silence that makes the moment")
    arm_on: list[str] = Field(default_factory=list,
                              description="Signal types that start the clock if none was seen")

    def signal_types(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((self.signal, *self.arm_on)))

    def check(self, signals: Mapping[str, Any], *, file: str) -> None:
        super().check(signals, file=file)
        for i, signal_type in enumerate(self.arm_on):
            if signal_type not in signals:
                raise CatalogError(f"unknown signal type {signal_type!r}", file=file,
                                   item=self.id, field=f"arm_on.{i}")

    def period_ms(self) -> int:
        return int(self.period_s * 1000)

    def detect(self, state: dict[str, Any], signal: SignalRecord,
               view: CustomerView) -> Moment | None:
        t = signal.occurred_at_ms
        if self.matches(signal):
            last = max(state.get("last", t), t)
            state["last"] = last
            state["due"] = last + self.period_ms()
        elif signal.type in self.arm_on and not state.keys() & {"last", "due", "fired_ms"}:
            state["due"] = t + self.period_ms()
        return None

    def on_time(self, state: dict[str, Any], now_ms: int, view: CustomerView) -> list[Moment]:
        due = state.get("due")
        if due is None or due > now_ms:
            return []
        fired: list[Moment] = []
        if self.cooled_down(state, due):
            fired.append(self.emit(state, view.customer_id, due, str(due), []))
        if self.refire == "interval":
            step = max(self.period_ms(), int(self.cooldown_s * 1000))
            while due <= now_ms:
                due += step
            state["due"] = due
        else:
            state.pop("due")
        return fired
