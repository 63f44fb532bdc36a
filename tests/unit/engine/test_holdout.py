"""Sticky holdout membership by a stable hash, and the lift report."""

from __future__ import annotations

from shush.engine.holdout import (
    format_lift_report,
    holdout_bucket,
    in_holdout,
    lift_report,
    period_index,
)
from shush.engine.outcomes import Resolution

DAY_MS = 86_400_000


def test_membership_is_stable_sticky_and_sized() -> None:
    assert holdout_bucket("c1", "offer", 7) == holdout_bucket("c1", "offer", 7)
    assert 0 <= holdout_bucket("c1", "offer", 7) < 100
    members = [c for c in range(20_000) if in_holdout(f"c{c}", "offer", 10, 90 * 86400, 0)]
    assert 1800 < len(members) < 2200
    # sticky for the whole validity period: the same customers a day before its end
    later = 89 * DAY_MS
    assert all(in_holdout(f"c{c}", "offer", 10, 90 * 86400, later) for c in members)
    # a new period draws afresh
    next_period = 90 * DAY_MS
    again = {c for c in range(20_000) if in_holdout(f"c{c}", "offer", 10, 90 * 86400, next_period)}
    assert len(again & set(members)) < 400
    assert period_index(next_period - 1, 90 * 86400) == 0
    assert period_index(next_period, 90 * 86400) == 1
    assert not in_holdout("c1", "offer", 0, 86400, 0)
    assert in_holdout("c1", "offer", 100, 86400, 0)


def test_membership_differs_per_action() -> None:
    a = {c for c in range(5000) if in_holdout(f"c{c}", "a", 20, 86400, 0)}
    b = {c for c in range(5000) if in_holdout(f"c{c}", "b", 20, 86400, 0)}
    assert len(a & b) < 0.3 * len(a)


def _r(action: str, positive: bool, holdout: bool, seen: tuple[str, ...] = ()) -> Resolution:
    kind = "accepted" if positive else "ignored"
    return Resolution("t", "c", action, 0, kind, positive, 0, holdout, (*seen, kind))


def test_lift_report() -> None:
    records = ([_r("x", True, False, ("opened",))] * 30 + [_r("x", False, False)] * 70
               + [_r("x", True, True)] * 2 + [_r("x", False, True)] * 18
               + [_r("y", True, False)] * 5)
    x, y = lift_report(records)
    assert (x.treated, x.treated_positive, x.holdout, x.holdout_positive) == (100, 30, 20, 2)
    assert x.treated_rate == 0.3 and x.holdout_rate == 0.1
    assert abs((x.lift or 0) - 0.2) < 1e-9 and abs((x.relative_lift or 0) - 2.0) < 1e-9
    assert x.outcomes == {"opened": 30, "accepted": 30, "ignored": 70}
    assert y.holdout_rate is None and y.lift is None and y.relative_lift is None
    text = format_lift_report([x, y])
    assert "x" in text and "20.0%" in text and "200.0%" in text
