"""Combination: all-of / any-of / at-least-k of other detectors' moments within a window.

E.g. discontent on three touchpoints within 7 days -> churn risk. The customer feeds every
moment of a member detector (``members``, detector ids; internal moments too) to
``on_moment``. Per member only its latest moment time is kept; the window is half-open and ends
at the latest member moment seen. When enough members are present the combination fires
(subject to ``cooldown_s``) and consumes them (skip past the match): the same moments never
make a second combination.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, model_validator

from ..models import Moment
from .base import BaseDetector, advance_window


class CombinationDetector(BaseDetector):
    kind: Literal["combination"] = "combination"
    members: list[str] = Field(min_length=1, description="Detector ids whose moments combine")
    mode: Literal["all", "any"] = "all"
    at_least: int | None = Field(None, ge=1, description="k of the members (overrides mode)")
    window_s: float = Field(gt=0, description="All counted moments within this (half-open)")

    @model_validator(mode="after")
    def _members_make_sense(self) -> CombinationDetector:
        if len(set(self.members)) != len(self.members):
            raise ValueError("members are listed twice")
        if self.id in self.members:
            raise ValueError("a combination cannot be its own member")
        if self.at_least is not None and self.at_least > len(self.members):
            raise ValueError(f"at_least {self.at_least} exceeds {len(self.members)} members")
        return self

    def required(self) -> int:
        if self.at_least is not None:
            return self.at_least
        return len(self.members) if self.mode == "all" else 1

    def check(self, signals: Mapping[str, Any], *, file: str) -> None:
        """Members are checked by the catalog, which knows every detector."""

    def on_moment(self, state: dict[str, Any], moment: Moment) -> Moment | None:
        t = moment.occurred_at_ms
        floor = advance_window(state, t, int(self.window_s * 1000))
        if floor is None:
            return None
        seen: dict[str, list[Any]] = state.setdefault("m", {})  # member -> [at_ms, [ids]]
        for stale in [m for m, (at, _) in seen.items() if at <= floor]:
            del seen[stale]
        had = seen.get(moment.detector_id)
        if had is None or had[0] <= t:
            seen[moment.detector_id] = [t, list(moment.evidence)]
        if len(seen) < self.required():
            return None
        evidence = [eid for _, ids in sorted(seen.values(), key=lambda v: v[0]) for eid in ids]
        state["m"] = {}
        if not self.cooled_down(state, t):
            return None
        return self.emit(state, moment.customer_id, t, moment.moment_id, evidence)

    def expire(self, state: dict[str, Any], horizon_ms: int) -> None:
        floor = horizon_ms - int(self.window_s * 1000)
        seen = state.get("m")
        if seen:
            state["m"] = {m: v for m, v in seen.items() if v[0] > floor}
