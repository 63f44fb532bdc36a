"""NWS alerts -> emergency run requests, one per actionable alert, keyed by incident.

For each alert of a ``ParseResult``, in order, the ``AlertTracker`` is told about it (so the
reference chains stay complete, expired and cancelled messages included), then the alert
becomes a run when it is actionable (status Actual, an Alert or Update, not expired at
``now``), at least as severe as ``min_severity``, new (the same alert id seen again is
skipped), and names counties with known zip codes. The run:

- selects the zip codes of the alert's counties (``ZipCountyIndex.zips_for_alert``);
- injects a moment named after the event (``EVENT_MOMENTS``: "Hurricane Warning" ->
  ``hurricane_warning``, "Hard Freeze Warning" -> ``extreme_cold_warning``; otherwise
  ``default_moment``), with urgency from the severity and a useful life up to the alert's end;
- carries ``dedup_key = nws:<incident id>``: every Update of the incident makes the same moment
  id, hence the same treatment key per customer, so a customer is treated once per incident
  while customers of newly added counties are still reached.

A Cancel makes no run; its incident is listed in ``cancelled_incidents`` so the caller can stop
a run in progress. Every alert that makes no run is listed in ``skipped`` with the reason.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from ...engine.runs import EmergencyRun, PopulationFilter
from .alert_tracker import AlertTracker
from .errors import FeedUsageError
from .geo import ZipCountyIndex
from .nws import ParseResult
from .weather_alert import AlertStatus, MessageType, Severity, WeatherAlert, is_expired

__all__ = [
    "EVENT_MOMENTS", "SkippedAlert", "WeatherRun", "WeatherRunPlan", "WeatherRunsConfig",
    "moment_for_event", "plan_weather_runs",
]

EVENT_MOMENTS: Mapping[str, str] = {
    "hurricane warning": "hurricane_warning",
    "hurricane watch": "hurricane_watch",
    "hurricane local statement": "hurricane_warning",
    "tropical storm warning": "tropical_storm_warning",
    "tropical storm watch": "tropical_storm_warning",
    "storm surge warning": "hurricane_warning",
    "extreme cold warning": "extreme_cold_warning",
    "hard freeze warning": "extreme_cold_warning",
    "freeze warning": "extreme_cold_warning",
    "wind chill warning": "extreme_cold_warning",
    "extreme heat warning": "extreme_heat_warning",
    "excessive heat warning": "extreme_heat_warning",
    "heat advisory": "extreme_heat_warning",
    "flood warning": "flood_warning",
    "flash flood warning": "flood_warning",
    "flood watch": "flood_watch",
    "flash flood watch": "flood_watch",
    "winter storm warning": "winter_storm_warning",
    "blizzard warning": "winter_storm_warning",
    "ice storm warning": "winter_storm_warning",
    "winter storm watch": "winter_storm_watch",
    "high wind warning": "high_wind_warning",
    "high wind watch": "high_wind_watch",
    "tornado warning": "tornado_warning",
    "tornado watch": "tornado_watch",
    "red flag warning": "wildfire_risk",
    "fire weather watch": "wildfire_risk",
}
SEVERITY_RANK: Mapping[Severity, int] = {
    Severity.UNKNOWN: 0, Severity.MINOR: 1, Severity.MODERATE: 2, Severity.SEVERE: 3,
    Severity.EXTREME: 4,
}


class WeatherRunsConfig(BaseModel):
    """Hang under ``EngineConfig.feeds.weather`` (with the feed's location and poll period)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_severity: Severity = Field(Severity.MODERATE, description="Less severe alerts make no run")
    default_moment: str = Field("severe_weather", min_length=1)
    moments: dict[str, str] = Field(default_factory=dict,
                                    description="Event name -> moment, over EVENT_MOMENTS")
    urgency: dict[Severity, float] = Field(default_factory=lambda: {
        Severity.EXTREME: 1.0, Severity.SEVERE: 0.9, Severity.MODERATE: 0.6,
        Severity.MINOR: 0.3, Severity.UNKNOWN: 0.3})
    half_life_s: float = Field(21_600.0, gt=0, description="Relevance halves this often")
    min_ttl_s: float = Field(3_600.0, gt=0, description="Least useful life of the moment")
    max_ttl_s: float = Field(7 * 86_400.0, gt=0, description="Longest useful life")
    rate_per_s: float = Field(500.0, gt=0, description="Customers injected per second")


@dataclass(frozen=True, slots=True)
class WeatherRun:
    run: EmergencyRun
    alert_id: str
    incident_id: str
    event: str
    severity: Severity
    area: str
    counties: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SkippedAlert:
    alert_id: str
    event: str
    reason: str


@dataclass(frozen=True, slots=True)
class WeatherRunPlan:
    runs: tuple[WeatherRun, ...]
    skipped: tuple[SkippedAlert, ...]
    cancelled_incidents: tuple[str, ...]


def moment_for_event(event: str, config: WeatherRunsConfig | None = None) -> str:
    """The moment name of an NWS event type (case-insensitive)."""
    config = config or WeatherRunsConfig()
    key = " ".join(event.lower().split())
    overrides = {" ".join(k.lower().split()): v for k, v in config.moments.items()}
    return overrides.get(key) or EVENT_MOMENTS.get(key) or config.default_moment


def _skip_reason(alert: WeatherAlert, now: datetime, config: WeatherRunsConfig) -> str | None:
    if alert.status is not AlertStatus.ACTUAL:
        return f"status {alert.status.value}, not Actual"
    if alert.message_type not in (MessageType.ALERT, MessageType.UPDATE):
        return f"message type {alert.message_type.value}"
    if is_expired(alert, now):
        return f"expired at {alert.expiry.isoformat() if alert.expiry else '?'}"
    if SEVERITY_RANK[alert.severity] < SEVERITY_RANK[config.min_severity]:
        return f"severity {alert.severity.value} below {config.min_severity.value}"
    return None


def _ttl_s(alert: WeatherAlert, now: datetime, config: WeatherRunsConfig) -> float:
    end = alert.ends or alert.expires
    left = (end - now).total_seconds() if end is not None else config.max_ttl_s
    return min(config.max_ttl_s, max(config.min_ttl_s, left))


def _short(text: str, limit: int) -> str:
    """``text`` if it fits in ``limit`` characters, else a stable 16-hex digest of it."""
    if len(text) <= limit:
        return text
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def plan_weather_runs(result: ParseResult, zips: ZipCountyIndex, tracker: AlertTracker,
                      now: datetime, config: WeatherRunsConfig | None = None) -> WeatherRunPlan:
    """The runs to start for ``result`` at ``now`` (timezone-aware); see the module doc."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise FeedUsageError("must be timezone-aware", field="now")
    config = config or WeatherRunsConfig()
    runs: list[WeatherRun] = []
    skipped: list[SkippedAlert] = []
    cancelled: list[str] = []
    for alert in result.alerts:
        sighting = tracker.observe(alert)
        if sighting.is_cancel:
            cancelled.append(sighting.incident_id)
            skipped.append(SkippedAlert(alert.alert_id, alert.event, "cancel"))
            continue
        reason = _skip_reason(alert, now, config)
        if reason is None and sighting.is_repeat:
            reason = "already seen"
        area = zips.zips_for_alert(alert) if reason is None else frozenset()
        if reason is None and not area:
            reason = "no zip codes for its counties (zones or marine areas only?)"
        if reason is not None:
            skipped.append(SkippedAlert(alert.alert_id, alert.event, reason))
            continue
        incident_key = _short(sighting.incident_id, 160)
        run = EmergencyRun(
            run_id=f"nws:{_short(sighting.incident_id, 60)}:{_short(alert.alert_id, 0)}",
            population=PopulationFilter(zips=tuple(sorted(area))),
            moment=moment_for_event(alert.event, config),
            urgency=config.urgency.get(alert.severity, 0.5),
            half_life_s=config.half_life_s, ttl_s=_ttl_s(alert, now, config),
            bypass_soft_caps=True, rate_per_s=config.rate_per_s,
            dedup_key=f"nws:{incident_key}",
            purpose=alert.headline or alert.event, requested_by="nws-feed")
        runs.append(WeatherRun(run, alert.alert_id, sighting.incident_id, alert.event,
                               alert.severity, alert.area_desc, alert.fips_counties))
    return WeatherRunPlan(tuple(runs), tuple(skipped), tuple(dict.fromkeys(cancelled)))
