"""Customer-local calendar arithmetic on engine time (ms since the epoch, UTC).

A local wall time that does not exist (in the hour skipped when clocks go forward) is read with
the offset from before the gap, so it lands after the gap by as much as it was inside it (02:30
on a spring-forward night is 03:30; a skipped midnight is the first instant of the day). An
ambiguous one (the hour repeated when clocks go back) is its first occurrence. That is
``zoneinfo`` with ``fold=0``, through a UTC round trip.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["customer_zone", "local_datetime", "local_day_start_ms", "wall_time_ms", "zone"]


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    """A time zone by IANA name; raises ``ValueError`` for an unknown one."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None


def customer_zone(profile: Mapping[str, Any], default: str = "UTC") -> ZoneInfo:
    """``profile['tz']`` if it names a known zone, else ``default``: a bad profile value must
    not stop decisioning (caps then count in the default zone)."""
    name = profile.get("tz")
    if isinstance(name, str) and name:
        try:
            return zone(name)
        except ValueError:
            pass
    return zone(default)


def local_datetime(ms: int, tz: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).astimezone(tz)


def wall_time_ms(day: date, at: time, tz: ZoneInfo) -> int:
    """The instant a local wall clock shows ``at`` on ``day`` (see the module notes on gaps)."""
    naive = datetime.combine(day, at.replace(tzinfo=None))
    aware = naive.replace(tzinfo=tz, fold=0)
    return int(aware.astimezone(UTC).timestamp() * 1000)


def local_day_start_ms(now_ms: int, tz: ZoneInfo, days_back: int = 0) -> int:
    """Start (local midnight, or the first instant of the day) of the local calendar day
    ``days_back`` days before the one containing ``now_ms``."""
    today = local_datetime(now_ms, tz).date()
    return wall_time_ms(today - timedelta(days=days_back), time(0), tz)
