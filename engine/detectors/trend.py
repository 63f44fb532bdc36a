"""Trend of a numeric attribute against the customer's own history.

``method: zscore``: the new value against the mean and standard deviation of the previous
``points`` values (running sums over a ring buffer: O(1) per event); fires when it lies as far
below (``direction: down``) or above (``up``) them as a value ``z_threshold`` true standard
deviations from a normal series' mean would, which happens ``normal_tail(z_threshold)`` of the
time by chance (2.3 % for 2). With ``n`` values the mean and spread are estimates, so the
bound is Student's t (``student_t.py``): with 5 values a plain z-score of 3.5, with 30 of 2.2
(the plain z-score's bound of 2 fired on 8.9 % of normal noise with 5 values, 3.2 % with 30).
``method: ewma_slope``: an exponentially weighted slope (per day) of the series; fires when it
falls below ``-slope_per_day`` (down) or rises above ``slope_per_day`` (up).
Both need ``min_points`` earlier values; events older than the last one seen are ignored.
"""

from __future__ import annotations

import math
from array import array
from typing import Any, Literal

from pydantic import Field, PrivateAttr, model_validator

from ..models import Moment
from ..signals import SignalRecord
from .base import CustomerView, NumericSignalDetector
from .float_buffer import float_buffer
from .student_t import MAX_Z, t_bound

DAY_MS = 86_400_000
MAX_POINTS = 256


class TrendDetector(NumericSignalDetector):
    kind: Literal["trend"] = "trend"
    attribute: str = Field(description="Numeric attribute followed")
    method: Literal["zscore", "ewma_slope"] = "zscore"
    direction: Literal["down", "up"] = "down"
    points: int = Field(30, ge=3, le=MAX_POINTS, description="Rolling history length (zscore)")
    min_points: int = Field(5, ge=2, le=MAX_POINTS, description="Values needed before firing")
    z_threshold: float | None = Field(None, gt=0, le=MAX_Z, description="Standard deviations "
                                      "(zscore), as rare as for a series of known mean and spread")
    slope_per_day: float | None = Field(None, gt=0, description="Slope magnitude (ewma_slope)")
    alpha: float = Field(0.3, gt=0, le=1, description="EWMA weight of the newest slope")
    # zscore: the bound on the plain z-score (population standard deviation) with n values,
    # at index n (``_z_bounds``), for any n up to MAX_POINTS: a customer's history may hold
    # more values than ``points`` after a catalog lowered it (the window keeps its length)
    _bounds: tuple[float, ...] = PrivateAttr(default=())

    @model_validator(mode="after")
    def _threshold_for_method(self) -> TrendDetector:
        if self.method == "zscore" and self.z_threshold is None:
            raise ValueError("method 'zscore' needs z_threshold")
        if self.method == "ewma_slope" and self.slope_per_day is None:
            raise ValueError("method 'ewma_slope' needs slope_per_day")
        return self

    def model_post_init(self, context: Any, /) -> None:
        if self.z_threshold is not None:
            self._bounds = _z_bounds(self.z_threshold, MAX_POINTS)

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
                hit = self._beyond((x - mean) / std, self._bounds[n])
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


def _z_bounds(z: float, points: int) -> tuple[float, ...]:
    """For each count n of values (index n, from 2), the bound on their plain z-score as rare
    as ``z``: the new value less the mean, over the sample standard deviation times
    ``sqrt(1 + 1/n)``, is Student's t with n - 1 degrees of freedom, and the plain z-score
    (population standard deviation) is that t times ``sqrt((n + 1) / (n - 1))``."""
    return (math.inf, math.inf, *(t_bound(z, n - 1) * math.sqrt((n + 1) / (n - 1))
                                   for n in range(2, points + 1)))
