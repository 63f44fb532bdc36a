"""Trend of a numeric attribute against the customer's own history.

``method: zscore``: the new value's z-score against the mean and standard deviation of the
previous ``points`` values (running sums over a ring buffer: O(1) per event); fires when
``z <= -z_threshold`` (``direction: down``) or ``z >= z_threshold`` (``up``).
``method: ewma_slope``: an exponentially weighted slope (per day) of the series; fires when it
falls below ``-slope_per_day`` (down) or rises above ``slope_per_day`` (up).
Both need ``min_points`` earlier values; events older than the last one seen are ignored.
"""

from __future__ import annotations

import math
from array import array
from typing import Any, Literal

from pydantic import Field, model_validator

from ..models import Moment
from ..signals import SignalRecord
from .base import CustomerView, NumericSignalDetector
from .float_buffer import float_buffer

DAY_MS = 86_400_000


class TrendDetector(NumericSignalDetector):
    kind: Literal["trend"] = "trend"
    attribute: str = Field(description="Numeric attribute followed")
    method: Literal["zscore", "ewma_slope"] = "zscore"
    direction: Literal["down", "up"] = "down"
    points: int = Field(30, ge=3, le=256, description="Rolling history length (zscore)")
    min_points: int = Field(5, ge=2, le=256, description="Values needed before firing")
    z_threshold: float | None = Field(None, gt=0, description="Standard deviations (zscore)")
    slope_per_day: float | None = Field(None, gt=0, description="Slope magnitude (ewma_slope)")
    alpha: float = Field(0.3, gt=0, le=1, description="EWMA weight of the newest slope")

    @model_validator(mode="after")
    def _threshold_for_method(self) -> TrendDetector:
        if self.method == "zscore" and self.z_threshold is None:
            raise ValueError("method 'zscore' needs z_threshold")
        if self.method == "ewma_slope" and self.slope_per_day is None:
            raise ValueError("method 'ewma_slope' needs slope_per_day")
        return self

    def detect(self, state: dict[str, Any], signal: SignalRecord,
               view: CustomerView) -> Moment | None:
        x = self.value_in_order(state, signal)
        if x is None:
            return None
        t = signal.occurred_at_ms
        if self.method == "zscore":
            hit = self._zscore(state, x)
        else:
            hit = self._slope(state, x, t)
        if hit is None:
            return None
        if self.gate(state, hit, t):
            return self.make_moment(state, signal, (signal.event_id,))
        return None

    def _beyond(self, score: float, threshold: float) -> bool:
        return score <= -threshold if self.direction == "down" else score >= threshold

    def _zscore(self, state: dict[str, Any], x: float) -> bool | None:
        buf = state.get("buf")
        if type(buf) is not array:  # (a call saved per event)
            buf = float_buffer(state, "buf")
        n = len(buf)
        hit: bool | None = None
        if n >= self.min_points:
            mean = state["s"] / n
            var = max(0.0, state["ss"] / n - mean * mean)
            std = math.sqrt(var)
            if std > 1e-12 * max(1.0, abs(mean)):
                assert self.z_threshold is not None
                hit = self._beyond((x - mean) / std, self.z_threshold)
        elif n == 0:  # the first value: the sums start here
            state["s"] = state["ss"] = 0.0
        buf.append(x)
        old = buf.pop(0) if len(buf) > self.points else 0.0
        state["s"] += x - old  # the same floats as adding, then removing
        state["ss"] += x * x - old * old
        return hit

    def _slope(self, state: dict[str, Any], x: float, t: int) -> bool | None:
        n = state.get("n", 0)
        state["n"] = n + 1
        if n == 0:
            state["x"], state["t"] = x, t
            return None
        dt_days = (t - state["t"]) / DAY_MS
        if dt_days <= 0:
            return None
        slope = (x - state["x"]) / dt_days
        state["x"], state["t"] = x, t
        ewma = slope if "sl" not in state else self.alpha * slope + (1 - self.alpha) * state["sl"]
        state["sl"] = ewma
        if n < self.min_points:
            return None
        assert self.slope_per_day is not None
        return self._beyond(ewma, self.slope_per_day)
