"""NWS alerts -> emergency runs: every real sample, incidents, cancels, expiry, moments."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shush.adapters.feeds.alert_tracker import AlertTracker
from shush.adapters.feeds.errors import FeedUsageError
from shush.adapters.feeds.geo import ZipCountyIndex
from shush.adapters.feeds.nws import (
    AlertStatus,
    MessageType,
    ParseResult,
    Severity,
    WeatherAlert,
    read_alerts,
)
from shush.adapters.feeds.weather_runs import (
    WeatherRunsConfig,
    moment_for_event,
    plan_weather_runs,
)

DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "nws"
SAMPLES = sorted(p.name for p in DATA_DIR.iterdir() if p.suffix in (".json", ".xml"))
FREEZE_XML = "beardicus_2022-12-23_AL_HardFreezeWarning_TAE.xml"
PYNWS_JSON = "pynws_alerts_active_zone.json"


@pytest.fixture(scope="module")
def zips() -> ZipCountyIndex:
    return ZipCountyIndex.from_csv()


def _variant(alert: WeatherAlert, **changes: object) -> WeatherAlert:
    data = alert.model_dump(exclude={"fips_counties"})
    data.update(changes)
    return WeatherAlert.model_validate(data)


def test_every_sample_is_covered() -> None:
    assert len(SAMPLES) == 7


@pytest.mark.parametrize("name", SAMPLES)
def test_every_real_sample_plans_runs_for_its_counties(name: str, zips: ZipCountyIndex) -> None:
    result = read_alerts(DATA_DIR / name)
    now = min(a.sent for a in result.alerts)  # when the first alert came out
    plan = plan_weather_runs(result, zips, AlertTracker(), now)
    assert len(plan.runs) + len(plan.skipped) == len(result.alerts)
    assert plan.runs, "each sample has at least one actionable, severe-enough alert"
    for weather in plan.runs:
        expected: set[str] = set()
        for fips in weather.counties:
            expected |= zips.zips_for_county(fips)
        assert set(weather.run.population.zips) == expected and expected
        assert weather.run.dedup_key == f"nws:{weather.incident_id}"
        assert weather.run.moment == moment_for_event(weather.event)
        assert weather.run.bypass_soft_caps and 0 < weather.run.urgency <= 1
    for skipped in plan.skipped:
        assert skipped.reason


def test_hard_freeze_becomes_an_extreme_cold_run_for_its_three_counties(
        zips: ZipCountyIndex) -> None:
    result = read_alerts(DATA_DIR / FREEZE_XML)
    alert = result.alerts[0]
    plan = plan_weather_runs(result, zips, AlertTracker(), alert.sent)
    [weather] = plan.runs
    assert weather.run.moment == "extreme_cold_warning" and weather.severity is Severity.MODERATE
    assert weather.run.urgency == 0.6
    assert weather.counties == ("01031", "01045", "01061")  # Coffee, Dale, Geneva (AL)
    assert zips.zips_for_county("01031") <= set(weather.run.population.zips)
    assert weather.run.ttl_s == pytest.approx(max(3600, (alert.expiry - alert.sent)
                                                  .total_seconds()))


def test_updates_of_an_incident_share_its_dedup_key_and_repeats_are_skipped(
        zips: ZipCountyIndex) -> None:
    tracker = AlertTracker()
    result = read_alerts(DATA_DIR / PYNWS_JSON)
    now = result.alerts[0].sent
    first = plan_weather_runs(result, zips, tracker, now)
    [weather] = first.runs
    assert weather.incident_id == "NWS-IDP-PROD-3963421-3367361"  # the chain's root
    again = plan_weather_runs(result, zips, tracker, now)
    assert again.runs == () and [s.reason for s in again.skipped] == ["already seen"]
    update = _variant(result.alerts[0], alert_id="NWS-IDP-PROD-next",
                      references=[{"alert_id": result.alerts[0].alert_id}],
                      same_codes=[*result.alerts[0].same_codes, "041005"])
    [later] = plan_weather_runs(ParseResult(alerts=(update,)), zips, tracker, now).runs
    assert later.run.dedup_key == weather.run.dedup_key  # a customer is treated once
    assert later.run.run_id != weather.run.run_id
    assert zips.zips_for_county("41005") <= set(later.run.population.zips)


def test_cancel_expired_test_and_minor_alerts_make_no_run(zips: ZipCountyIndex) -> None:
    alert = read_alerts(DATA_DIR / FREEZE_XML).alerts[0]
    tracker = AlertTracker()
    plan_weather_runs(ParseResult(alerts=(alert,)), zips, tracker, alert.sent)
    cancel = _variant(alert, alert_id="cancel-1", message_type=MessageType.CANCEL,
                      references=[{"alert_id": alert.alert_id}])
    plan = plan_weather_runs(ParseResult(alerts=(cancel,)), zips, tracker, alert.sent)
    assert plan.runs == () and plan.cancelled_incidents == (alert.alert_id,)
    others = (
        _variant(alert, alert_id="x1"),  # expired by `now`
        _variant(alert, alert_id="x2", status=AlertStatus.TEST, expires=None),
        _variant(alert, alert_id="x3", severity=Severity.MINOR, expires=None),
        _variant(alert, alert_id="x4", same_codes=["057150"], expires=None),  # marine only
    )
    later = alert.expiry + timedelta(minutes=1)
    plan = plan_weather_runs(ParseResult(alerts=others), zips, AlertTracker(), later)
    assert plan.runs == ()
    reasons = [s.reason for s in plan.skipped]
    assert reasons[0].startswith("expired") and reasons[1].startswith("status Test")
    assert reasons[2].startswith("severity Minor") and reasons[3].startswith("no zip codes")


def test_moment_names() -> None:
    assert moment_for_event("Hurricane Warning") == "hurricane_warning"
    assert moment_for_event("Extreme Cold Warning") == "extreme_cold_warning"
    assert moment_for_event("Hard  Freeze warning") == "extreme_cold_warning"
    assert moment_for_event("Dust Storm Warning") == "severe_weather"
    config = WeatherRunsConfig(moments={"Dust Storm Warning": "dust_storm"},
                               default_moment="weather_alert")
    assert moment_for_event("dust storm warning", config) == "dust_storm"
    assert moment_for_event("Volcano Warning", config) == "weather_alert"


def test_now_must_be_timezone_aware(zips: ZipCountyIndex) -> None:
    with pytest.raises(FeedUsageError):
        plan_weather_runs(ParseResult(), zips, AlertTracker(), datetime(2025, 1, 1))
    assert plan_weather_runs(ParseResult(), zips, AlertTracker(),
                             datetime(2025, 1, 1, tzinfo=UTC)).runs == ()
