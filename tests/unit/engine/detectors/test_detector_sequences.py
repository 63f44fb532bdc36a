"""Semantics of sequence, not-followed-by, absence and combination (engine level, per customer)."""

from __future__ import annotations

from detector_kit import DAY, HOUR, MINUTE, T0, Driver, make_catalog

from shush.engine.catalog import bundled_catalog_path, load_catalog
from shush.engine.customer import CustomerState
from shush.engine.signals import SignalRecord


def seq(**over: object) -> dict[str, object]:
    return {"id": "sq", "kind": "sequence", "steps": [{"signal": "a"}, {"signal": "b"}],
            "window_s": 3600, "moment": "a_then_b", **over}


def nfb(**over: object) -> dict[str, object]:
    return {"id": "nf", "kind": "not_followed_by", "first": {"signal": "a"},
            "then": {"signal": "b"}, "window_s": 3600, "moment": "no_b", **over}


# -- sequence ---------------------------------------------------------------------------------
def test_sequence_relaxed_contiguity_and_window_edge() -> None:
    d = Driver(make_catalog(seq()))
    assert d.send("a", T0) == []
    assert d.send("c", T0 + MINUTE) == []  # something in between is fine
    assert d.send("b", T0 + HOUR - 1) == ["a_then_b"]
    edge = Driver(make_catalog(seq()))
    edge.send("a", T0)
    assert edge.send("b", T0 + HOUR) == []  # half-open: B exactly W after A is too late


def test_sequence_skips_past_the_match_no_flood() -> None:
    d = Driver(make_catalog(seq()))
    assert [d.send("a", T0), d.send("a", T0 + 1)] == [[], []]
    assert d.send("b", T0 + 2) == ["a_then_b"]
    assert d.send("b", T0 + 3) == []  # both partials were consumed by the match
    assert len(d.fired) == 1


def test_sequence_first_match_takes_the_first_a() -> None:
    d = Driver(make_catalog(seq()))
    d.send("a", T0, event_id="a1")
    d.send("a", T0 + 1, event_id="a2")
    d.send("b", T0 + 2, event_id="b1")
    assert d.fired[0].evidence == ("a1", "b1")


def test_sequence_caps_partials_and_cleans_up_a_silent_customer() -> None:
    d = Driver(make_catalog(seq(max_partials=3)))
    for i in range(10):
        d.send("a", T0 + i)
    state = d.customer.detector_state["sq"]
    assert len(state["p"]) == 3
    assert d.customer.next_due_ms() == T0 + 7 + HOUR  # cleanup timer of the oldest kept
    for _ in range(3):
        d.tick(T0 + 10 * HOUR)
    assert state["p"] == [] and d.customer.next_due_ms() is None


def test_sequence_three_steps_with_where() -> None:
    d = Driver(make_catalog(seq(steps=[{"signal": "a", "where": {"k": "view"}},
                                       {"signal": "a", "where": {"k": "cart"}},
                                       {"signal": "b"}])))
    assert d.send("a", T0, k="cart") == []  # step 2 before step 1: not a start
    assert d.send("a", T0 + 1, k="view") == []
    assert d.send("b", T0 + 2) == []
    assert d.send("a", T0 + 3, k="cart") == []
    assert d.send("b", T0 + 4) == ["a_then_b"]


# -- not followed by --------------------------------------------------------------------------
def test_not_followed_by_fires_by_timer_when_the_window_closes() -> None:
    d = Driver(make_catalog(nfb()))
    d.send("a", T0, event_id="a1")
    assert d.customer.next_due_ms() == T0 + HOUR
    assert d.tick(T0 + HOUR - 1) == []
    assert d.tick(T0 + HOUR) == ["no_b"]
    assert d.fired[0].moment_id == "nf@a1" and d.fired[0].occurred_at_ms == T0 + HOUR
    assert d.customer.next_due_ms() is None


def test_not_followed_by_b_inside_cancels_b_at_the_edge_is_too_late() -> None:
    d = Driver(make_catalog(nfb()))
    d.send("a", T0)
    d.send("b", T0 + HOUR - 1)
    assert d.tick(T0 + 2 * HOUR) == []
    late = Driver(make_catalog(nfb()))
    late.send("a", T0)
    assert late.send("b", T0 + HOUR) == ["no_b"]  # the event's own time closes the window


# -- absence ----------------------------------------------------------------------------------
def test_absence_fires_by_timer_once_per_silence() -> None:
    d = Driver(make_catalog({"id": "ab", "kind": "absence", "signal": "a", "period_s": 30 * 86400,
                             "arm_on": ["profile"], "moment": "silent"}))
    d.send("profile", T0, country="US")  # arms the clock without any deposit yet
    assert d.customer.next_due_ms() == T0 + 30 * DAY
    d.send("a", T0 + DAY)  # a deposit restarts it
    assert d.tick(T0 + 31 * DAY - 1) == []
    assert d.tick(T0 + 31 * DAY) == ["silent"]
    assert d.tick(T0 + 90 * DAY) == []  # hysteresis: once per silence
    assert d.send("a", T0 + 91 * DAY) == []
    assert d.customer.next_due_ms() == T0 + 121 * DAY


def test_absence_interval_repeats_and_event_time_can_prove_it() -> None:
    d = Driver(make_catalog({"id": "ab", "kind": "absence", "signal": "a", "period_s": 900,
                             "refire": "interval", "moment": "offline"}))
    d.send("a", T0)
    assert d.tick(T0 + 15 * MINUTE) == ["offline"]
    assert d.tick(T0 + 30 * MINUTE) == ["offline"]
    d2 = Driver(make_catalog({"id": "ab", "kind": "absence", "signal": "a", "period_s": 900,
                              "moment": "offline"}))
    d2.send("a", T0)
    assert d2.send("a", T0 + 20 * MINUTE) == ["offline"]  # no tick in between: still seen


# -- combination: the telco churn case on the shipped catalog ---------------------------------
def _telco(events: list[tuple[str, int]]) -> list[str]:
    catalog = load_catalog([bundled_catalog_path("telco")])
    customer = CustomerState("c1")
    names: list[str] = []
    for i, (type_, at_ms) in enumerate(events):
        moments = customer.apply(SignalRecord(f"e{i}", "c1", type_, at_ms, "test", {}), catalog)
        names.extend(m.name for m in moments or [])
    names.extend(m.name for m in customer.live_moments(events[-1][1]))
    return names


def test_telco_three_touchpoints_within_7_days_is_churn_risk() -> None:
    names = _telco([("web_complaint", T0), ("ivr_complaint", T0 + 3 * DAY),
                    ("store_complaint", T0 + 7 * DAY - 1)])
    assert names.count("churn_risk_discontent") == 2  # returned, and live
    assert not any(n.startswith("discontent_") for n in names)  # internal moments stay inside


def test_telco_two_touchpoints_or_ten_days_is_no_churn_risk() -> None:
    assert _telco([("web_complaint", T0), ("ivr_complaint", T0 + DAY),
                   ("web_complaint", T0 + 2 * DAY)]) == []
    assert _telco([("web_complaint", T0), ("ivr_complaint", T0 + 5 * DAY),
                   ("store_complaint", T0 + 10 * DAY)]) == []
    assert _telco([("web_complaint", T0), ("ivr_complaint", T0 + DAY),
                   ("store_complaint", T0 + 7 * DAY)]) == []  # exactly 7 days: outside


def test_combination_any_and_at_least() -> None:
    members = [{"id": f"m{t}", "kind": "count", "signal": t, "window_s": 60, "internal": True,
                "refire": "interval", "moment": f"m{t}"} for t in "abc"]
    combo = {"id": "k", "kind": "combination", "members": ["ma", "mb", "mc"], "at_least": 2,
             "window_s": 3600, "moment": "two_of_three"}
    d = Driver(make_catalog(*members, combo))
    assert d.send("a", T0) == []
    assert d.send("a", T0 + 1) == []
    assert d.send("c", T0 + 2) == ["two_of_three"]
    assert d.send("b", T0 + 3) == []  # members were consumed
