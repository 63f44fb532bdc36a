"""Scheduled runs: cron in a time zone, fire once after downtime, lateness, checkpoints."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from shush.engine.errors import ConfigError
from shush.engine.runs import PopulationFilter
from shush.engine.schedule import RunSchedule, ScheduledRun

NEW_YORK = ZoneInfo("America/New_York")


def ms(*parts: int, tz: ZoneInfo | None = NEW_YORK) -> int:
    return int(datetime(*parts, tzinfo=tz or UTC).timestamp() * 1000)


def statement_day(**changes: object) -> ScheduledRun:
    data: dict[str, object] = {
        "name": "statement_day", "cron": "0 9 1 * *", "timezone": "America/New_York",
        "population": {"segments": ["mass"]}, "purpose": "monthly statement-day check",
        "moment": "statement_day"}
    data.update(changes)
    return ScheduledRun.model_validate(data)


def test_next_fire_is_local_time_across_daylight_saving() -> None:
    run = statement_day()
    march = run.next_fire_ms(ms(2025, 2, 15))
    april = run.next_fire_ms(march)
    assert march == ms(2025, 3, 1, 9) == ms(2025, 3, 1, 14, tz=None)  # EST, UTC-5
    assert april == ms(2025, 4, 1, 9) == ms(2025, 4, 1, 13, tz=None)  # EDT, UTC-4
    assert run.next_fire_ms(ms(2025, 3, 1, 9) - 1) == march  # strictly after


def test_latest_fire_includes_the_instant_itself() -> None:
    run = statement_day()
    assert run.latest_fire_ms(ms(2025, 3, 1, 9)) == ms(2025, 3, 1, 9)
    assert run.latest_fire_ms(ms(2025, 3, 1, 9) - 1) == ms(2025, 2, 1, 9)
    assert run.latest_fire_ms(ms(2025, 3, 1, 9) + 500) == ms(2025, 3, 1, 9)


def test_a_new_schedule_never_fires_for_the_past() -> None:
    schedule = RunSchedule([statement_day()], now_ms=ms(2025, 3, 1, 10))
    assert schedule.due(ms(2025, 3, 1, 10)) == []
    assert schedule.next_due_ms() == ms(2025, 4, 1, 9)
    assert schedule.due(ms(2025, 4, 1, 9) - 1) == []
    [(run, fire)] = schedule.due(ms(2025, 4, 1, 9))
    assert run.name == "statement_day" and fire == ms(2025, 4, 1, 9)
    assert schedule.due(ms(2025, 4, 1, 9, 30)) == []  # once per firing


def test_after_downtime_a_run_fires_once_for_the_latest_missed_time() -> None:
    last = {"statement_day": ms(2025, 1, 1, 9)}
    schedule = RunSchedule([statement_day()], now_ms=ms(2025, 5, 15), last_fired=last)
    assert schedule.due(ms(2025, 5, 15)) == [(schedule.runs["statement_day"],
                                              ms(2025, 5, 1, 9))]
    assert schedule.due(ms(2025, 5, 20)) == []
    assert schedule.to_wire() == {"statement_day": ms(2025, 5, 1, 9)}


def test_a_missed_firing_older_than_the_lateness_is_skipped() -> None:
    run = statement_day(max_lateness_s=3600)
    schedule = RunSchedule([run], now_ms=0, last_fired={"statement_day": ms(2025, 3, 1, 9)})
    assert schedule.due(ms(2025, 4, 1, 10, 1)) == []  # 61 minutes late
    assert schedule.skipped == {"statement_day": 1}
    assert schedule.due(ms(2025, 5, 1, 9, 59)) == [(run, ms(2025, 5, 1, 9))]


def test_run_for_is_deterministic() -> None:
    run = statement_day()
    request = run.run_for(ms(2025, 3, 1, 9))
    assert request.run_id == request.dedup_key == f"sched:statement_day@{ms(2025, 3, 1, 9)}"
    assert request.population == PopulationFilter(segments=("mass",))
    assert request.moment == "statement_day" and request.requested_by == "schedule"
    assert request.moment_for("a", 0).moment_id == request.run_id


def test_invalid_schedules_are_refused() -> None:
    with pytest.raises(ValidationError, match="cron"):
        statement_day(cron="every monday")
    with pytest.raises(ValidationError, match="time zone"):
        statement_day(timezone="Mars/Olympus")
    with pytest.raises(ConfigError, match="twice"):
        RunSchedule([statement_day(), statement_day()], now_ms=0)
