"""Calendar feed: holiday entries per country/subdivision; runs consistent with the detector."""

from __future__ import annotations

from datetime import date

from shush.adapters.feeds.calendar_feed import (
    HolidayMoment,
    calendar_runs,
    holiday_entries,
)
from shush.engine.detectors.calendar import CalendarDetector
from shush.engine.detectors.milestone import day_start_ms
from shush.engine.signals import SignalRecord

BLACK_FRIDAY = HolidayMoment(id="black_friday", holiday="Thanksgiving", shift_days=1,
                             days_before=7, moment="black_friday_offer", urgency=0.7)


class _View:
    customer_id = "alice"

    @property
    def profile(self) -> dict[str, object]:
        return {"country": "US"}


def test_entries_for_a_country_and_its_subdivision() -> None:
    entries = holiday_entries([("us", "ca")], date(2025, 11, 1), date(2025, 11, 30))
    found = [(e.country, e.subdivision, e.name, e.date) for e in entries]
    assert ("US", None, "Thanksgiving Day", date(2025, 11, 27)) in found
    assert ("US", "CA", "Day After Thanksgiving", date(2025, 11, 28)) in found
    assert not any(sub == "CA" and name == "Thanksgiving Day" for _, sub, name, _ in found)
    assert all(date(2025, 11, 1) <= e.date <= date(2025, 11, 30) for e in entries)


def test_unknown_country_has_no_entries() -> None:
    assert holiday_entries([("XX", None)], date(2025, 1, 1), date(2025, 12, 31)) == []


def test_black_friday_run_is_injected_seven_days_before() -> None:
    [run] = calendar_runs([BLACK_FRIDAY], [("US", None)], date(2025, 11, 1), date(2025, 11, 30))
    assert run.holiday_date == date(2025, 11, 28)  # the day after Thanksgiving
    assert run.inject_on == date(2025, 11, 21) and run.inject_at_ms == day_start_ms(
        date(2025, 11, 21))
    assert run.run.population.countries == ("US",) and run.run.population.regions == ()
    assert run.run.moment == "black_friday_offer" and run.run.urgency == 0.7
    assert run.run.moment_for("alice", 0).moment_id == "black_friday@2025-11-28"


def test_range_is_on_the_injection_day() -> None:
    assert calendar_runs([BLACK_FRIDAY], [("US", None)], date(2025, 11, 22),
                         date(2025, 11, 30)) == []
    runs = calendar_runs([BLACK_FRIDAY], [("US", None)], date(2024, 1, 1), date(2025, 12, 31))
    assert [r.holiday_date for r in runs] == [date(2024, 11, 29), date(2025, 11, 28)]


def test_feed_and_detector_make_the_same_moment_id_and_time() -> None:
    detector = CalendarDetector(id="black_friday", moment="black_friday_offer",
                                holiday="Thanksgiving", shift_days=1, days_before=7,
                                arm_on=["profile_update"])
    state: dict[str, object] = {}
    signal = SignalRecord("e1", "alice", "profile_update", day_start_ms(date(2025, 10, 1)),
                          "", {"country": "US"})
    detector.detect(state, signal, _View())
    due = detector.next_due_ms(state)
    assert due is not None
    [moment] = detector.on_time(state, due, _View())
    spec = HolidayMoment.from_detector(detector)
    [run] = calendar_runs([spec], [("US", None)], date(2025, 10, 1), date(2025, 12, 31))
    assert run.run.moment_for("alice", run.inject_at_ms).moment_id == moment.moment_id
    assert run.inject_at_ms == moment.occurred_at_ms


def test_subdivision_only_holidays_are_opt_in() -> None:
    epiphany = HolidayMoment(id="epiphany", holiday="Epiphany", days_before=2, moment="m")
    places = [("DE", "BY"), ("DE", "HH")]
    assert calendar_runs([epiphany], places, date(2025, 1, 1), date(2025, 1, 31)) == []
    opted = epiphany.model_copy(update={"include_subdivisions": True})
    [run] = calendar_runs([opted], places, date(2025, 1, 1), date(2025, 1, 31))
    assert (run.country, run.subdivision, run.holiday_date) == ("DE", "BY", date(2025, 1, 6))
    assert run.run.population.regions == ("BY",)
