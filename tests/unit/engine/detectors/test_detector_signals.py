"""Semantics of the signal-driven kinds: threshold, status change, count, distinct, trend,
forecast; with boundary cases (window edge, exact threshold, out of order, late, duplicate)."""

from __future__ import annotations

import pytest
from detector_kit import DAY, HOUR, MINUTE, T0, Driver, make_catalog

from shush.engine.customer import LateEventError
from shush.engine.errors import EventRejected


def count_det(**over: object) -> dict[str, object]:
    return {"id": "cnt", "kind": "count", "signal": "a", "window_s": 3600, "at_least": 3,
            "moment": "many", **over}


# -- threshold --------------------------------------------------------------------------------
def test_threshold_crossing_fires_once_and_rearms_past_reset() -> None:
    d = Driver(make_catalog({"id": "th", "kind": "threshold", "signal": "a", "attribute": "x",
                             "op": "<", "value": 100, "reset": 200, "moment": "low"}))
    assert d.send("a", T0, x=150) == []
    assert d.send("a", T0 + 1, x=99) == ["low"]
    assert d.send("a", T0 + 2, x=50) == []  # still below: no flood
    assert d.send("a", T0 + 3, x=150) == []  # above 100 but not past the reset band
    assert d.send("a", T0 + 4, x=90) == []
    assert d.send("a", T0 + 5, x=200) == []  # exactly at reset re-arms
    assert d.send("a", T0 + 6, x=99.9) == ["low"]


@pytest.mark.parametrize(("op", "expected"), [(">=", ["big"]), (">", [])])
def test_threshold_exactly_at_the_value(op: str, expected: list[str]) -> None:
    d = Driver(make_catalog({"id": "th", "kind": "threshold", "signal": "a", "attribute": "x",
                             "op": op, "value": 5000, "mode": "level", "moment": "big"}))
    assert d.send("a", T0, x=5000) == expected


def test_threshold_level_respects_cooldown_and_where() -> None:
    d = Driver(make_catalog({"id": "th", "kind": "threshold", "signal": "a", "attribute": "x",
                             "op": ">", "value": 0, "mode": "level", "cooldown_s": 60,
                             "where": {"k": ["s", "t"]}, "moment": "m"}))
    assert d.send("a", T0, x=1, k="u") == []
    assert d.send("a", T0, x=1, k="s") == ["m"]
    assert d.send("a", T0 + 59_999, x=1, k="t") == []
    assert d.send("a", T0 + 60_000, x=1, k="t") == ["m"]


def test_threshold_refire_must_agree_with_mode() -> None:
    with pytest.raises(Exception, match="contradicts mode"):
        make_catalog({"id": "th", "kind": "threshold", "signal": "a", "attribute": "x",
                      "op": ">", "value": 0, "mode": "level", "refire": "hysteresis",
                      "moment": "m"})


# -- status change ----------------------------------------------------------------------------
def test_status_change_per_key_with_to_values_and_out_of_order() -> None:
    d = Driver(make_catalog({"id": "st", "kind": "status_change", "signal": "a",
                             "attribute": "status", "key_attribute": "k",
                             "to_values": ["delayed"], "moment": "late_order"}))
    assert d.send("a", T0, k="o1", status="placed") == []
    assert d.send("a", T0 + 2, k="o1", status="delayed") == ["late_order"]
    assert d.send("a", T0 + 1, k="o1", status="shipped") == []  # older: ignored
    assert d.send("a", T0 + 3, k="o1", status="delayed") == []  # no change
    assert d.send("a", T0 + 4, k="o2", status="delayed") == ["late_order"]  # first seen: news


def test_status_change_first_observation_is_not_a_change_without_to_values() -> None:
    d = Driver(make_catalog({"id": "st", "kind": "status_change", "signal": "a",
                             "attribute": "status", "moment": "changed"}))
    assert d.send("a", T0, status="v1") == []
    assert d.send("a", T0 + 1, status="v2") == ["changed"]


# -- count ------------------------------------------------------------------------------------
def test_count_within_window_and_exactly_at_the_edge() -> None:
    d = Driver(make_catalog(count_det()))
    assert d.send("a", T0) == []
    assert d.send("a", T0 + 1) == []
    assert d.send("a", T0 + HOUR - 1) == ["many"]
    edge = Driver(make_catalog(count_det()))
    edge.send("a", T0)
    edge.send("a", T0 + 1)
    assert edge.send("a", T0 + HOUR) == []  # t and t + W are not within W


def test_count_out_of_order_within_lateness_counts_and_late_is_rejected() -> None:
    d = Driver(make_catalog(count_det(), lateness_s=600))
    d.send("a", T0 + 10 * MINUTE)
    d.send("a", T0 + 20 * MINUTE)
    assert d.send("a", T0 + 15 * MINUTE) == ["many"]  # out of order, 5 min late
    with pytest.raises(LateEventError) as info:
        d.send("a", T0 + 10 * MINUTE - 1, event_id="old")
    err = info.value
    assert isinstance(err, EventRejected)
    assert (err.event_id, err.field, err.watermark_ms) == ("old", "occurred_at", T0 + 10 * MINUTE)
    assert "too late" in str(err)
    assert not d.customer.seen("old")
    assert d.send("a", T0 + 10 * MINUTE, event_id="at-watermark") == []  # exactly: accepted
    d.send("a", T0 + HOUR, event_id="much-later")  # the watermark passes "at-watermark"...
    assert d.send("a", T0 + 10 * MINUTE, event_id="at-watermark") is None  # ...a re-send of
    # which is still a duplicate, not a late event to dead-letter


def test_count_duplicates_count_once() -> None:
    d = Driver(make_catalog(count_det()))
    assert d.send("a", T0, event_id="e1") == []
    assert d.send("a", T0 + 1, event_id="e1") is None
    assert d.send("a", T0 + 2, event_id="e2") == []
    assert d.send("a", T0 + 3, event_id="e3") == ["many"]


def test_count_hysteresis_waits_for_reset_interval_waits_for_cooldown() -> None:
    hyst = Driver(make_catalog(count_det(at_least=2)))
    names = [hyst.send("a", T0 + i * MINUTE) for i in range(5)]
    assert names == [[], ["many"], [], [], []]
    assert hyst.send("a", T0 + 5 * MINUTE + 2 * HOUR) == []  # reset: window was empty
    assert hyst.send("a", T0 + 6 * MINUTE + 2 * HOUR) == ["many"]
    inter = Driver(make_catalog(count_det(at_least=2, refire="interval", cooldown_s=120)))
    names = [inter.send("a", T0 + i * MINUTE) for i in range(5)]
    assert names == [[], ["many"], [], ["many"], []]


# -- distinct ---------------------------------------------------------------------------------
def test_distinct_codes_within_24h() -> None:
    det = {"id": "dc", "kind": "distinct", "signal": "a", "attribute": "code", "window_s": 86400,
           "at_least": 3, "moment": "looming"}
    d = Driver(make_catalog(det))
    assert d.send("a", T0, code="E1") == []
    assert d.send("a", T0 + HOUR, code="E1") == []
    assert d.send("a", T0 + 2 * HOUR, code="E2") == []
    assert d.send("a", T0 + DAY - 1, code="E3") == ["looming"]
    edge = Driver(make_catalog(det))
    edge.send("a", T0, code="E1")
    edge.send("a", T0 + 1, code="E2")
    assert edge.send("a", T0 + DAY, code="E3") == []  # E1 left the window exactly at W


# -- trend and forecast -----------------------------------------------------------------------
def test_trend_zscore_fires_on_a_drop_against_own_history() -> None:
    d = Driver(make_catalog({"id": "tr", "kind": "trend", "signal": "a", "attribute": "x",
                             "z_threshold": 2.0, "points": 10, "min_points": 5,
                             "moment": "dropping"}))
    for i, x in enumerate([100, 102, 98, 101, 99, 100]):
        assert d.send("a", T0 + i * DAY, x=x) == []
    assert d.send("a", T0 + 6 * DAY, x=90) == ["dropping"]
    assert d.send("a", T0 + 7 * DAY, x=80) == []  # hysteresis: still low, no re-fire


def test_trend_ewma_slope() -> None:
    d = Driver(make_catalog({"id": "tr", "kind": "trend", "signal": "a", "attribute": "x",
                             "method": "ewma_slope", "slope_per_day": 5, "min_points": 3,
                             "moment": "falling"}))
    out = [d.send("a", T0 + i * DAY, x=100 - 10 * i) for i in range(5)]
    assert out == [[], [], [], ["falling"], []]


def test_forecast_fires_before_the_crossing() -> None:
    d = Driver(make_catalog({"id": "fc", "kind": "forecast", "signal": "a", "attribute": "x",
                             "op": "<", "value": 0, "horizon_s": 7 * 86400,
                             "moment": "heading_negative"}))
    assert d.send("a", T0, x=1000) == []
    assert d.send("a", T0 + DAY, x=900) == []
    assert d.send("a", T0 + 2 * DAY, x=800) == []  # projects 100 at +7 days: not yet
    assert d.send("a", T0 + 3 * DAY, x=650) == ["heading_negative"]
    assert d.send("a", T0 + 4 * DAY, x=-10) == []  # crossed already: not a forecast


def test_forecast_waits_until_its_points_span_min_span_s() -> None:
    spec = {"id": "fc", "kind": "forecast", "signal": "a", "attribute": "x", "op": "<",
            "value": 0, "horizon_s": 7 * 86400, "moment": "heading_negative"}
    hasty = Driver(make_catalog(spec))
    hasty.send("a", T0, x=1000)
    hasty.send("a", T0 + 1000, x=990)
    assert hasty.send("a", T0 + 2000, x=980) == ["heading_negative"]  # a week from 2 seconds
    d = Driver(make_catalog({**spec, "min_span_s": DAY / 1000}))
    d.send("a", T0, x=1000)
    d.send("a", T0 + 1000, x=990)
    assert d.send("a", T0 + 2000, x=980) == []  # the same noise: no forecast yet
    assert d.send("a", T0 + DAY - 1, x=500) == []  # a millisecond short of a day
    assert d.send("a", T0 + DAY, x=450) == ["heading_negative"]
