"""Threshold and crossing on a numeric attribute.

``mode: crossing`` fires when the condition turns true (not on every event above) and re-arms
only once it has turned false again, past ``reset`` if one is given (hysteresis).
``mode: level`` fires on every matching event, subject to ``cooldown_s``.
Events older than the last one seen for this detector do not move a crossing's state.
``mode`` is this kind's re-fire mode: ``crossing`` is hysteresis, ``level`` is interval.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from ..models import Moment
from ..signals import SignalRecord
from .base import COMPARISONS, CustomerView, NumericSignalDetector


class ThresholdDetector(NumericSignalDetector):
    kind: Literal["threshold"] = "threshold"
    attribute: str = Field(description="Numeric attribute compared")
    op: Literal[">", ">=", "<", "<="]
    value: float
    mode: Literal["crossing", "level"] = "crossing"
    reset: float | None = Field(
        None, description="Crossing re-arms only past this value (hysteresis band)"
    )

    @model_validator(mode="before")
    @classmethod
    def _refire_follows_mode(cls, data: Any) -> Any:
        if isinstance(data, dict) and "refire" not in data:
            implied = "interval" if data.get("mode") == "level" else "hysteresis"
            data = {**data, "refire": implied}
        return data

    @model_validator(mode="after")
    def _reset_on_the_other_side(self) -> ThresholdDetector:
        implied = "hysteresis" if self.mode == "crossing" else "interval"
        if self.refire != implied:
            raise ValueError(f"refire {self.refire!r} contradicts mode {self.mode!r}")
        if self.reset is not None:
            if self.mode != "crossing":
                raise ValueError("reset applies to mode 'crossing' only")
            above = self.op in (">", ">=")
            if (above and self.reset > self.value) or (not above and self.reset < self.value):
                raise ValueError(f"reset {self.reset} must lie on the other side of {self.value}")
        return self

    def _rearmed(self, value: float) -> bool:
        if self.reset is None:
            return not COMPARISONS[self.op](value, self.value)
        return value <= self.reset if self.op in (">", ">=") else value >= self.reset

    def detect(self, state: dict[str, Any], signal: SignalRecord,
               view: CustomerView) -> Moment | None:
        value = signal.attributes.get(self.attribute)
        if value is None or signal.type != self.signal or (self.where
                                                           and not self.matches(signal)):
            return None  # (``matches`` only for a where: a call per event saved)
        hit = COMPARISONS[self.op](value, self.value)
        if self.mode == "level":
            if hit and self.cooled_down(state, signal.occurred_at_ms):
                return self.make_moment(state, signal, (signal.event_id,))
            return None
        if signal.occurred_at_ms < state.get("seen_ms", signal.occurred_at_ms):
            return None  # out of order: a crossing follows event time, not arrival
        state["seen_ms"] = signal.occurred_at_ms
        armed = state.get("armed", True)
        if hit and armed:
            state["armed"] = False
            if self.cooled_down(state, signal.occurred_at_ms):
                return self.make_moment(state, signal, (signal.event_id,))
            return None
        if not hit and not armed and self._rearmed(value):
            state["armed"] = True
        return None
