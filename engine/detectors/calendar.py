"""Calendar: N days before a holiday in the customer's country (the ``holidays`` package).

Armed by ``arm_on`` signals (typically the profile update that carries the country); the
country is read from the profile (``country_attribute``), else ``default_country``. The holiday
is found by name (case-insensitive substring, e.g. ``Thanksgiving``), moved by ``shift_days``
(Black Friday is Thanksgiving + 1). The moment fires at 00:00 UTC ``days_before`` days ahead of
it, by the engine clock, once per holiday date (id ``<detector>@<date>``); if the customer
arrives inside that lead time, it fires at once. Then it re-arms for the next year.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any, Literal

import holidays
from pydantic import Field

from ..errors import CatalogError
from ..models import Moment
from ..signals import SignalRecord
from .base import BaseDetector, CustomerView
from .milestone import day_start_ms


@lru_cache(maxsize=512)
def holiday_dates(country: str, year: int, name: str,
                  categories: tuple[str, ...]) -> tuple[date, ...]:
    """Dates in ``year`` whose holiday name contains ``name``; empty for an unknown country."""
    try:
        table = holidays.country_holidays(country, years=year,
                                          categories=categories or None)
    except (NotImplementedError, KeyError, ValueError):
        return ()
    needle = name.casefold()
    return tuple(sorted(d for d, label in table.items() if needle in str(label).casefold()))


class CalendarDetector(BaseDetector):
    uses_timer = True

    kind: Literal["calendar"] = "calendar"
    holiday: str = Field(min_length=1, description="Holiday name, case-insensitive substring")
    shift_days: int = Field(0, ge=-31, le=31, description="Days added to the holiday's date")
    days_before: int = Field(7, ge=0, le=366, description="Lead time of the moment")
    arm_on: list[str] = Field(min_length=1, description="Signal types that (re)arm the timer")
    country_attribute: str = Field("country", description="Profile attribute with ISO country")
    default_country: str | None = Field("US", description="When the profile has no country")
    categories: list[str] = Field(default_factory=list, description="holidays categories")

    def signal_types(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.arm_on))

    def check(self, signals: Mapping[str, Any], *, file: str) -> None:
        for i, signal_type in enumerate(self.arm_on):
            if signal_type not in signals:
                raise CatalogError(f"unknown signal type {signal_type!r}", file=file,
                                   item=self.id, field=f"arm_on.{i}")
        if self.default_country is not None and not self._dates(self.default_country, 2025):
            raise CatalogError(f"no holiday matching {self.holiday!r} in "
                               f"{self.default_country!r}", file=file, item=self.id,
                               field="holiday")

    def _dates(self, country: str, year: int) -> list[date]:
        found = holiday_dates(country.upper(), year, self.holiday, tuple(self.categories))
        return [d + timedelta(days=self.shift_days) for d in found]

    def _next(self, country: str, today: date) -> date | None:
        """The first (shifted) holiday date after ``today``."""
        for year in (today.year, today.year + 1):
            for day in self._dates(country, year):
                if day > today:
                    return day
        return None

    def detect(self, state: dict[str, Any], signal: SignalRecord,
               view: CustomerView) -> Moment | None:
        country = view.profile.get(self.country_attribute) or self.default_country
        if not isinstance(country, str) or country == state.get("c"):
            return None
        state["c"] = country
        state["from_ms"] = signal.occurred_at_ms
        today = datetime.fromtimestamp(signal.occurred_at_ms / 1000, tz=UTC).date()
        self._arm(state, today)
        return None

    def _arm(self, state: dict[str, Any], today: date) -> None:
        done = state.get("last")
        after = max(today, date.fromisoformat(done)) if done else today
        holiday = self._next(state["c"], after)
        if holiday is None:
            state.pop("due", None)
            return
        state["h"] = holiday.isoformat()
        state["due"] = day_start_ms(holiday - timedelta(days=self.days_before))

    def on_time(self, state: dict[str, Any], now_ms: int, view: CustomerView) -> list[Moment]:
        due = state.get("due")
        if due is None or due > now_ms:
            return []
        holiday = state["h"]
        state["last"] = holiday
        at_ms = max(due, state.get("from_ms", due))  # joined inside the lead time: now
        moment = self.emit(state, view.customer_id, at_ms, holiday, [])
        self._arm(state, date.fromisoformat(holiday))
        return [moment]
