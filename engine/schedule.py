"""Scheduled runs: a cron expression in a time zone, a population and a purpose.

``ScheduledRun`` says when (``cron``, croniter syntax, in ``timezone``, so ``0 9 1 * *`` is 09:00
local on the 1st across daylight-saving changes) and whom (a ``PopulationFilter``); each firing
becomes an ``EmergencyRun``-shaped request (``run_for``) with the run id and dedup key
``sched:<name>@<fire ms>``, so re-submitting one firing after a restart treats nobody twice.

``RunSchedule`` keeps the last firing of each run (checkpoint ``to_wire``; the supervisor
stores it). After downtime a run fires once, for its latest missed time, not once per missed
time; a missed time older than ``max_lateness_s`` is skipped. A run added now never fires for
times before now.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .errors import ConfigError
from .runs import EmergencyRun, PopulationFilter

__all__ = ["RunSchedule", "ScheduledRun"]


@lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None


class ScheduledRun(BaseModel):
    """A named, recurring run (hang a list under ``EngineConfig.runs`` or the catalog)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")
    cron: str = Field(min_length=1, description="croniter expression, e.g. '0 9 1 * *'")
    timezone: str = Field("UTC", description="IANA zone the cron expression is read in")
    population: PopulationFilter
    purpose: str = Field("", max_length=500, description="Why, e.g. 'statement-day check'")
    moment: str = Field(min_length=1, description="Moment injected into each customer")
    urgency: float = Field(0.5, ge=0, le=1)
    half_life_s: float = Field(86_400.0, gt=0)
    ttl_s: float | None = Field(None, gt=0)
    rate_per_s: float = Field(200.0, gt=0)
    bypass_soft_caps: bool = False
    max_lateness_s: float | None = Field(
        None, gt=0, description="Skip a missed firing older than this; None: always catch up")

    @field_validator("cron")
    @classmethod
    def _check_cron(cls, value: str) -> str:
        if not croniter.is_valid(value):
            raise ValueError(f"not a valid cron expression: {value!r}")
        return value

    @field_validator("timezone")
    @classmethod
    def _check_zone(cls, value: str) -> str:
        _zone(value)
        return value

    def _at(self, ms: int) -> datetime:
        return datetime.fromtimestamp(ms / 1000, tz=UTC).astimezone(_zone(self.timezone))

    def next_fire_ms(self, after_ms: int) -> int:
        """The first firing strictly after ``after_ms``."""
        fire: datetime = croniter(self.cron, self._at(after_ms)).get_next(datetime)
        return int(fire.timestamp() * 1000)

    def latest_fire_ms(self, at_or_before_ms: int) -> int:
        """The latest firing at or before ``at_or_before_ms``."""
        cron = croniter(self.cron, self._at(at_or_before_ms + 1000))
        fire = int(cron.get_prev(datetime).timestamp() * 1000)
        while fire > at_or_before_ms:
            fire = int(cron.get_prev(datetime).timestamp() * 1000)
        return fire

    def due_fire_ms(self, last_fired_ms: int, now_ms: int) -> int | None:
        """The one firing to run now: the latest in ``(last_fired_ms, now_ms]``, or None."""
        latest = self.latest_fire_ms(now_ms)
        return latest if latest > last_fired_ms else None

    def run_for(self, fire_ms: int) -> EmergencyRun:
        key = f"sched:{self.name}@{fire_ms}"
        return EmergencyRun(
            run_id=key, dedup_key=key, population=self.population, moment=self.moment,
            urgency=self.urgency, half_life_s=self.half_life_s, ttl_s=self.ttl_s,
            rate_per_s=self.rate_per_s, bypass_soft_caps=self.bypass_soft_caps,
            purpose=self.purpose or self.name, requested_by="schedule")


class RunSchedule:
    """The scheduled runs and when each last fired; ``due(now)`` says what to start."""

    def __init__(self, runs: Iterable[ScheduledRun], now_ms: int,
                 last_fired: Mapping[str, int] | None = None) -> None:
        self.runs: dict[str, ScheduledRun] = {}
        for run in runs:
            if run.name in self.runs:
                raise ConfigError(f"scheduled run {run.name!r} is declared twice",
                                  source="schedule", field="name")
            self.runs[run.name] = run
        known = dict(last_fired or {})
        self.last_fired = {name: known.get(name, now_ms) for name in self.runs}
        self.skipped: dict[str, int] = dict.fromkeys(self.runs, 0)

    def due(self, now_ms: int) -> list[tuple[ScheduledRun, int]]:
        """(run, fire time) to start now, each run at most once; advances the last firings."""
        starting = []
        for name, run in self.runs.items():
            fire = run.due_fire_ms(self.last_fired[name], now_ms)
            if fire is None:
                continue
            self.last_fired[name] = fire
            lateness = run.max_lateness_s
            if lateness is not None and now_ms - fire > lateness * 1000:
                self.skipped[name] += 1
                continue
            starting.append((run, fire))
        return starting

    def next_due_ms(self) -> int | None:
        """When ``due`` next has work (to sleep until then)."""
        times = [run.next_fire_ms(self.last_fired[name]) for name, run in self.runs.items()]
        return min(times) if times else None

    def to_wire(self) -> dict[str, int]:
        return dict(self.last_fired)

