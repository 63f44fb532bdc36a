"""Timer-driven kinds (milestone, calendar), the shard's TimerWheel, and snapshots."""

from __future__ import annotations

from datetime import UTC, datetime

import msgpack
import pytest
from detector_kit import DAY, HOUR, T0, Driver, make_catalog

from shush.engine.catalog import bundled_catalog_path, load_catalog
from shush.engine.customer import NO_TIMER, CustomerState
from shush.engine.signals import SignalRecord
from shush.engine.timers import TimerWheel


def ms(year: int, month: int, day: int) -> int:
    return int(datetime(year, month, day, tzinfo=UTC).timestamp() * 1000)


MILESTONE = {"id": "bd", "kind": "milestone", "signal": "profile", "attribute": "birth_date",
             "years": [18, 55, 65], "moment": "birthday"}


def test_milestone_fires_on_the_day_by_timer() -> None:
    d = Driver(make_catalog(MILESTONE))
    d.send("profile", ms(2025, 6, 1), birth_date="2007-06-20")
    assert d.customer.next_due_ms() == ms(2025, 6, 20)
    assert d.tick(ms(2025, 6, 20) - 1) == []
    assert d.tick(ms(2025, 6, 20)) == ["birthday"]
    assert d.fired[0].moment_id == "bd@18"
    assert d.customer.next_due_ms() == ms(2062, 6, 20)  # 55 next


def test_milestone_skips_values_passed_before_the_date_was_known() -> None:
    d = Driver(make_catalog(MILESTONE))
    d.send("profile", ms(2025, 6, 1), birth_date="1985-03-01")
    assert d.customer.next_due_ms() == ms(2040, 3, 1)  # 55, not 18
    d2 = Driver(make_catalog(MILESTONE))
    assert d2.send("profile", ms(2025, 6, 1) + HOUR, birth_date="2007-06-01") == ["birthday"]


def test_the_earliest_timer_follows_timers_set_moved_and_dropped() -> None:
    absence = {"id": "ab", "kind": "absence", "signal": "a", "period_s": 30 * 86400,
               "arm_on": ["profile"], "moment": "silent"}
    d = Driver(make_catalog(MILESTONE, absence))
    customer = d.customer
    assert customer.timer_due == NO_TIMER and customer.next_due_ms() is None
    d.send("profile", ms(2025, 6, 1), birth_date="2007-06-20")  # both armed: 19 days, 30
    assert customer.timers == {"bd": ms(2025, 6, 20), "ab": ms(2025, 7, 1)}
    assert customer.timer_due == ms(2025, 6, 20)
    d.send("a", ms(2025, 6, 2))  # the absence moves later; the earliest stays
    assert customer.timer_due == ms(2025, 6, 20)
    assert d.tick(ms(2025, 6, 20)) == ["birthday"]  # the birthday moves 37 years on
    assert customer.timer_due == ms(2025, 7, 2) == customer.timers["ab"]
    restored = CustomerState.from_snapshot(customer.to_snapshot())
    assert restored.timer_due == ms(2025, 7, 2)
    assert d.tick(ms(2025, 7, 2)) == ["silent"]  # fired once per silence: dropped
    assert customer.timers == {"bd": ms(2062, 6, 20)}
    assert customer.timer_due == ms(2062, 6, 20) == customer.next_due_ms()


def test_calendar_black_friday_a_week_ahead_then_next_year() -> None:
    d = Driver(make_catalog({"id": "bf", "kind": "calendar", "holiday": "Thanksgiving",
                             "shift_days": 1, "days_before": 7, "arm_on": ["profile"],
                             "moment": "black_friday_soon"}))
    d.send("profile", ms(2025, 11, 1), country="US")
    assert d.customer.next_due_ms() == ms(2025, 11, 21)  # Black Friday 2025 is 28 November
    assert d.tick(ms(2025, 11, 21)) == ["black_friday_soon"]
    assert d.fired[0].moment_id == "bf@2025-11-28"
    assert d.customer.next_due_ms() == ms(2026, 11, 20)  # 27 November 2026 - 7 days


def test_calendar_country_without_the_holiday_arms_nothing() -> None:
    d = Driver(make_catalog({"id": "bf", "kind": "calendar", "holiday": "Thanksgiving",
                             "arm_on": ["profile"], "moment": "m"}))
    d.send("profile", ms(2025, 11, 1), country="FR")
    assert d.customer.next_due_ms() is None


def test_timer_wheel_pops_due_customers_with_lazy_deletion() -> None:
    wheel = TimerWheel()
    wheel.schedule("a", 30)
    wheel.schedule("b", 10)
    wheel.schedule("c", 20)
    wheel.schedule("b", 40)  # rescheduled: the old entry is stale
    wheel.schedule("c", None)  # cancelled
    assert wheel.next_due_ms() == 30 and len(wheel) == 2
    assert wheel.pop_due(35) == ["a"]
    assert wheel.pop_due(39) == []
    assert "b" in wheel and wheel.pop_due(100, limit=5) == ["b"]
    assert wheel.next_due_ms() is None
    for i in range(1000):
        wheel.schedule("x", i)
    assert len(wheel._heap) <= 2 * len(wheel) + 64  # stale entries do not pile up


def test_shard_loop_with_wheel_fires_absence_without_any_event() -> None:
    catalog = load_catalog([bundled_catalog_path("devices")])
    wheel = TimerWheel()
    customers = {cid: CustomerState(cid) for cid in ("p", "q")}
    for cid, customer in customers.items():
        customer.apply(SignalRecord(f"{cid}1", cid, "device_heartbeat", T0, "iot", {}), catalog)
        wheel.schedule(cid, customer.next_due_ms())
    fired = []
    for now in (T0 + 14 * 60_000, T0 + 15 * 60_000):
        for cid in wheel.pop_due(now):
            fired += customers[cid].on_time(now, catalog)
            wheel.schedule(cid, customers[cid].next_due_ms())
    assert sorted(m.customer_id for m in fired) == ["p", "q"]
    assert {m.name for m in fired} == {"service_unavailable_device"}


def _busy_customer() -> tuple[CustomerState, object]:
    names = ("bank", "telco", "insurance", "devices", "retail")
    catalog = load_catalog([bundled_catalog_path(n) for n in names])
    c = CustomerState("c1")
    events = [
        ("profile_update", {"country": "US", "segment": "mass", "age": 40}),
        ("customer_dates", {"birth_date": "1970-07-01", "customer_since": "2020-01-01"}),
        ("balance_update", {"balance": 500.0}), ("balance_update", {"balance": 80.0}),
        ("deposit", {"amount": 10.0, "kind": "cash"}), ("salary_expected", {}),
        ("web_complaint", {}), ("ivr_complaint", {}), ("device_error", {"code": "E1"}),
        ("device_heartbeat", {}), ("product_view", {"product": "p"}), ("cart_add", {}),
        ("shopper_profile", {"country": "US"}), ("card_declined", {"amount": 10.0}),
    ]
    for i, (type_, attrs) in enumerate(events):
        c.apply(SignalRecord(f"e{i}", "c1", type_, T0 + i * 1000, "t", attrs), catalog)
    return c, catalog


def test_snapshot_round_trips_through_msgpack_and_behaves_the_same() -> None:
    original, catalog = _busy_customer()
    assert original.moments and original.timers
    data = msgpack.unpackb(msgpack.packb(original.to_snapshot(), use_bin_type=True), raw=False)
    restored = CustomerState.from_snapshot(data)
    again = msgpack.unpackb(msgpack.packb(restored.to_snapshot(), use_bin_type=True), raw=False)
    assert again == data
    assert restored.moments == original.moments
    assert restored.next_due_ms() == original.next_due_ms()
    nxt = SignalRecord("z", "c1", "store_complaint", T0 + DAY, "t", {})
    assert restored.apply(nxt, catalog) == original.apply(nxt, catalog)  # type: ignore[arg-type]
    assert restored.seen("e3") and restored.apply(nxt, catalog) is None  # type: ignore[arg-type]
    later = T0 + 40 * DAY
    assert restored.on_time(later, catalog) == original.on_time(later, catalog)  # type: ignore[arg-type]


def test_a_version_1_snapshot_still_loads_without_its_decisions() -> None:
    original, _ = _busy_customer()
    data = {**original.to_snapshot(), "v": 1, "max_decisions": 5,
            "decisions": [{"customer_id": "c1", "decided_at_ms": T0, "trigger": "triggered",
                           "candidates": [], "winner": None}]}
    restored = CustomerState.from_snapshot(data)
    assert restored.to_snapshot() == original.to_snapshot()
    with pytest.raises(ValueError, match="version 99"):
        CustomerState.from_snapshot({**data, "v": 99})
