"""Milestone: an age or anniversary reaching given values, from a date in the profile.

Listens to the signal that carries the date (e.g. ``profile_update.birth_date``, an ISO date or
epoch ms) and arms a timer for the next value not yet reached when the date became known: a
customer who joins at 40 gets the 55 and 65 moments, not 18. The moment fires at 00:00 UTC of the
anniversary, by the engine clock, with the id ``<detector>@<value>`` (once per value).
A 29 February date has its anniversary on 28 February in other years.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any, Literal

from pydantic import Field

from ..models import Moment
from ..signals import SignalRecord
from .base import CustomerView, SignalDetector, require_attribute


def parse_date(raw: Any) -> date | None:
    """An ISO date (or date-time) string or epoch milliseconds; ``None`` if unreadable."""
    try:
        if isinstance(raw, bool):
            return None
        if isinstance(raw, int | float):
            return datetime.fromtimestamp(raw / 1000, tz=UTC).date()
        if isinstance(raw, str):
            return date.fromisoformat(raw[:10])
    except (ValueError, OverflowError, OSError):
        return None
    return None


def anniversary(origin: date, years: int) -> date:
    try:
        return origin.replace(year=origin.year + years)
    except ValueError:  # 29 February
        return origin.replace(year=origin.year + years, day=28)


def day_start_ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


class MilestoneDetector(SignalDetector):
    uses_timer = True

    kind: Literal["milestone"] = "milestone"
    attribute: str = Field(description="Date attribute (birth date, customer since...)")
    years: list[int] = Field(min_length=1, description="Ages or anniversaries, in years")

    def check(self, signals: Mapping[str, Any], *, file: str) -> None:
        super().check(signals, file=file)
        require_attribute(signals, self.signal, self.attribute, ("string", "timestamp"),
                          file=file, item=self.id, field="attribute")

    def detect(self, state: dict[str, Any], signal: SignalRecord,
               view: CustomerView) -> Moment | None:
        origin = parse_date(signal.attributes.get(self.attribute))
        if origin is None or not self.matches(signal):
            return None
        if state.get("date") != origin.isoformat():
            state["date"] = origin.isoformat()
            state["from_ms"] = day_start_ms(
                datetime.fromtimestamp(signal.occurred_at_ms / 1000, tz=UTC).date())
            self._arm(state)
        return None

    def _arm(self, state: dict[str, Any]) -> None:
        origin = date.fromisoformat(state["date"])
        done = set(state.get("done", []))
        for years in sorted(self.years):
            due = day_start_ms(anniversary(origin, years))
            if years not in done and due >= state["from_ms"]:
                state["due"], state["next"] = due, years
                return
        state.pop("due", None)
        state.pop("next", None)

    def on_time(self, state: dict[str, Any], now_ms: int, view: CustomerView) -> list[Moment]:
        fired: list[Moment] = []
        while state.get("due") is not None and state["due"] <= now_ms:
            due, years = state["due"], state["next"]
            state.setdefault("done", []).append(years)
            state["from_ms"] = due
            fired.append(self.emit(state, view.customer_id, due, str(years), []))
            self._arm(state)
        return fired
