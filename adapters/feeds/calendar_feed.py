"""Calendar feed: holiday moments for whole populations, by country and subdivision.

The population-wide twin of the per-customer ``CalendarDetector`` (engine/detectors/calendar):
the same ``holidays`` tables, the same matching (case-insensitive substring of the holiday
name, moved by ``shift_days``: Black Friday is Thanksgiving + 1), the same firing time (00:00
UTC, ``days_before`` days ahead) and the same moment id ``<id>@<holiday date>``. A catalog's
calendar detectors convert with ``HolidayMoment.from_detector``; a customer reached by both the
detector and a feed run gets one treatment, because both make the same idempotency key.

``holiday_entries`` lists (country, subdivision, name, date) for a date range; a subdivision
lists only its own holidays (the country's apply to every subdivision).
``calendar_runs`` turns specs into dated ``EmergencyRun`` requests (population: the country,
and the region for subdivision holidays), whose injection day falls in the range.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache

import holidays
from pydantic import BaseModel, ConfigDict, Field

from ...engine.detectors.calendar import CalendarDetector, holiday_dates
from ...engine.detectors.milestone import day_start_ms
from ...engine.runs import EmergencyRun, PopulationFilter

__all__ = ["CalendarRun", "HolidayEntry", "HolidayMoment", "calendar_runs", "holiday_entries"]

Place = tuple[str, str | None]  # (ISO country, subdivision or None)


class HolidayMoment(BaseModel):
    """Which holiday makes which moment, how long before (cf. ``CalendarDetector``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1, max_length=128, description="Moment ids are <id>@<date>")
    holiday: str = Field(min_length=1, description="Holiday name, case-insensitive substring")
    shift_days: int = Field(0, ge=-31, le=31, description="Days added to the holiday's date")
    days_before: int = Field(7, ge=0, le=366, description="Lead time of the moment")
    moment: str = Field(min_length=1)
    urgency: float = Field(0.5, ge=0, le=1)
    half_life_s: float = Field(86_400.0, gt=0)
    ttl_s: float | None = Field(None, gt=0)
    categories: tuple[str, ...] = Field((), description="holidays categories; () = public")
    include_subdivisions: bool = Field(
        False, description="Also match subdivision-only holidays (the detector does not)")
    rate_per_s: float = Field(200.0, gt=0)

    @classmethod
    def from_detector(cls, detector: CalendarDetector) -> HolidayMoment:
        return cls(id=detector.id, holiday=detector.holiday, shift_days=detector.shift_days,
                   days_before=detector.days_before, moment=detector.moment,
                   urgency=detector.urgency, half_life_s=detector.half_life_s,
                   ttl_s=detector.ttl_s, categories=tuple(detector.categories))


@dataclass(frozen=True, slots=True)
class HolidayEntry:
    country: str
    subdivision: str | None
    name: str
    date: date


@dataclass(frozen=True, slots=True)
class CalendarRun:
    spec: HolidayMoment
    country: str
    subdivision: str | None
    holiday_date: date  # shifted (Black Friday, not Thanksgiving)
    inject_on: date
    inject_at_ms: int  # 00:00 UTC of inject_on, as the detector fires
    run: EmergencyRun


@lru_cache(maxsize=512)
def _table(country: str, subdivision: str | None, year: int,
           categories: tuple[str, ...]) -> tuple[tuple[date, str], ...]:
    try:
        table = holidays.country_holidays(country, subdiv=subdivision, years=year,
                                          categories=categories or None)
    except (NotImplementedError, KeyError, ValueError):
        return ()
    rows: list[tuple[date, str]] = []
    for day, label in sorted(table.items()):
        rows.extend((day, name.strip()) for name in str(label).split(";"))
    return tuple(rows)


def _own(country: str, subdivision: str | None, year: int,
         categories: tuple[str, ...]) -> list[tuple[date, str]]:
    rows = _table(country, subdivision, year, categories)
    if subdivision is None:
        return list(rows)
    national = set(_table(country, None, year, categories))
    return [row for row in rows if row not in national]


def _places(places: Iterable[Place]) -> list[Place]:
    found: dict[Place, None] = {}
    for country, subdivision in places:
        found[(country.upper(), None)] = None
        if subdivision:
            found[(country.upper(), subdivision.upper())] = None
    return list(found)


def holiday_entries(places: Iterable[Place], start: date, end: date,
                    categories: tuple[str, ...] = ()) -> list[HolidayEntry]:
    """Holidays from ``start`` to ``end`` (inclusive) of each place, by date."""
    out = []
    for country, subdivision in _places(places):
        for year in range(start.year, end.year + 1):
            for day, name in _own(country, subdivision, year, categories):
                if start <= day <= end:
                    out.append(HolidayEntry(country, subdivision, name, day))
    return sorted(out, key=lambda e: (e.date, e.country, e.subdivision or "", e.name))


def _spec_dates(spec: HolidayMoment, country: str, subdivision: str | None,
                year: int) -> list[date]:
    if subdivision is None:  # exactly the detector's lookup
        found = holiday_dates(country, year, spec.holiday, spec.categories)
    else:
        needle = spec.holiday.casefold()
        found = tuple(sorted({d for d, name in _own(country, subdivision, year, spec.categories)
                              if needle in name.casefold()}))
    return [d + timedelta(days=spec.shift_days) for d in found]


def calendar_runs(specs: Iterable[HolidayMoment], places: Iterable[Place], start: date,
                  end: date) -> list[CalendarRun]:
    """Runs whose injection day (holiday - ``days_before``) is in ``[start, end]``."""
    runs = []
    places = _places(places)
    for spec in specs:
        for country, subdivision in places:
            if subdivision is not None and not spec.include_subdivisions:
                continue
            for year in range(start.year, end.year + 2):
                for holiday in _spec_dates(spec, country, subdivision, year):
                    inject_on = holiday - timedelta(days=spec.days_before)
                    if start <= inject_on <= end:
                        runs.append(_run(spec, country, subdivision, holiday, inject_on))
    return sorted(runs, key=lambda r: (r.inject_on, r.spec.id, r.country, r.subdivision or ""))


def _run(spec: HolidayMoment, country: str, subdivision: str | None, holiday: date,
         inject_on: date) -> CalendarRun:
    key = f"{spec.id}@{holiday.isoformat()}"
    where = f"{country}-{subdivision}" if subdivision else country
    population = PopulationFilter(countries=(country,),
                                  regions=(subdivision,) if subdivision else ())
    run = EmergencyRun(run_id=f"cal:{key}:{where}", dedup_key=key, population=population,
                       moment=spec.moment, urgency=spec.urgency, half_life_s=spec.half_life_s,
                       ttl_s=spec.ttl_s, rate_per_s=spec.rate_per_s,
                       purpose=f"{spec.holiday} ({where}) on {holiday.isoformat()}",
                       requested_by="calendar-feed")
    return CalendarRun(spec, country, subdivision, holiday, inject_on,
                       day_start_ms(inject_on), run)
