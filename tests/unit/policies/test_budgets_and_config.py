"""Volume budgets (reserve/commit/release, day rollover) and the policies section's validation."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import msgpack
import pytest

from shush.engine.arbitration import Verdict
from shush.engine.errors import CatalogError
from shush.engine.models import Action, Candidate
from shush.policies.budgets import BudgetBook, apply_budgets
from shush.policies.features import FeatureBinner, propensity_features
from shush.policies.policy_config import parse_policies

AMS = ZoneInfo("Europe/Amsterdam")
ACTIONS = {"x": Action(id="x", kind="marketing", channel="email", value=1),
           "y": Action(id="y", kind="service", channel="sms", value=1)}


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=AMS).timestamp() * 1000)  # type: ignore[misc]


def test_budget_is_spent_only_on_commit_and_refuses_when_exactly_full() -> None:
    book = BudgetBook({"x": 2}, "Europe/Amsterdam")
    now = ms(2025, 6, 3, 10)
    assert book.reserve("x", "t1", now) and book.reserve("x", "t2", now)
    assert not book.reserve("x", "t3", now)  # 2 held of 2
    assert book.remaining("x", now) == 0 and book.spent("x", now) == 0
    assert book.release("t2")
    assert book.reserve("x", "t3", now)
    assert book.commit("t1", now) and not book.commit("t1", now)  # idempotent
    assert book.spent("x", now) == 1 and book.remaining("x", now) == 0
    assert book.reserve("x", "t1", now)  # a committed token is not charged twice
    assert book.reserve("y", "t9", now) and book.remaining("y", now) is None  # no budget


def test_budget_day_rolls_over_at_local_midnight() -> None:
    book = BudgetBook({"x": 1}, "Europe/Amsterdam")
    assert book.reserve("x", "t1", ms(2025, 6, 3, 23, 59)) and book.commit("t1", ms(2025, 6, 3,
                                                                                  23, 59))
    assert not book.reserve("x", "t2", ms(2025, 6, 3, 23, 59, 59))
    assert book.reserve("x", "t2", ms(2025, 6, 4, 0, 0))  # a new day in Amsterdam
    assert "2025-06-03" not in book.committed and book.spent("x", ms(2025, 6, 4, 0, 0)) == 0


def test_stale_reservations_expire() -> None:
    book = BudgetBook({"x": 1}, reservation_ttl_s=60)
    assert book.reserve("x", "t1", 0)
    assert not book.reserve("x", "t2", 59_999)
    assert book.reserve("x", "t2", 60_000)  # t1 expired
    assert not book.commit("t1", 60_000)


def test_budget_snapshot_round_trip() -> None:
    book = BudgetBook({"x": 3}, "Europe/Amsterdam")
    now = ms(2025, 6, 3, 10)
    book.reserve("x", "a", now)
    book.reserve("x", "b", now)
    book.commit("a", now)
    data = msgpack.unpackb(msgpack.packb(book.to_snapshot()))
    again = BudgetBook({"x": 3}, "Europe/Amsterdam")
    again.load_snapshot(data)
    assert again.remaining("x", now) == 1 and again.commit("b", now) and again.spent("x", now) == 2


def _cand(action_id: str, score: float) -> Candidate:
    return Candidate(action_id=action_id, moment_id="m", p=1, c=1, v=score, l=1, score=score)


def test_apply_budgets_lets_the_runner_up_win() -> None:
    book = BudgetBook({"x": 0})
    verdicts = [Verdict("c1", (_cand("x", 5), _cand("y", 2)), "x"), Verdict("c2", (), None)]
    out, removals = apply_budgets(verdicts, book, 0)
    assert out[0].winner == "y" and [c.action_id for c in out[0].candidates] == ["y"]
    assert removals["c1"][0].policy == "budget" and "daily budget of 0" in removals["c1"][0].reason
    assert out[1] is verdicts[1]
    assert "c1|y|m" not in book.reserved  # y has no budget: nothing to hold


def test_policies_section_defaults_and_errors() -> None:
    assert parse_policies(None, actions=ACTIONS).for_action("x").response_timeout_s == 604_800
    cases: list[tuple[dict[str, Any], str, str | None]] = [
        ({"actions": {"zzz": {}}}, "policies.actions.zzz", "zzz"),
        ({"actions": {"x": {"holdout_pct": 120}}}, "policies.actions.x.holdout_pct", "x"),
        ({"actions": {"x": {"context_features": ["age"]}}},
         "policies.actions.x.context_features", "x"),
        ({"default_timezone": "Mars/Base"}, "policies.default_timezone", None),
        ({"quiet_hours": [{"start": "08:00", "end": "08:00"}]}, "policies.quiet_hours.0", None),
        ({"features": [{"name": "f", "expression": "__import__('os')", "edges": [1]}]},
         "policies.features.0.expression", "f"),
        ({"contact": {"suppression": [{"outcome": "accepted", "count": 1, "within_days": 1,
                                       "suppress_days": 1}]}},
         "policies.contact.suppression.0.outcome", None),
        ({"actions": {"x": {"suppression": [{"count": 1, "within_days": 1, "suppress_days": 1,
                                             "scope": "group"}]}}}, "policies.actions.x.group",
         "x"),
    ]
    for raw, field, item in cases:
        with pytest.raises(CatalogError) as info:
            parse_policies(raw, actions=ACTIONS, file="bank.yaml")
        assert (info.value.field, info.value.item, info.value.file) == (field, item, "bank.yaml")


def test_feature_binning() -> None:
    policy = parse_policies({"features": [
        {"name": "age", "expression": "profile.age", "edges": [30, 50]},
        {"name": "segment", "expression": "profile.segment", "categories": ["student", "sme"]},
    ], "actions": {"x": {"context_features": ["segment", "age"]}}}, actions=ACTIONS)
    binner = FeatureBinner(policy.features)
    assert binner.cardinalities == (4, 3)
    assert binner.bins({"profile": {"age": 29, "segment": "sme"}}) == (1, 2)
    assert binner.bins({"profile": {"age": 30}}) == (2, 0)
    assert binner.bins({"profile": {"age": "old", "segment": "other"}}) == (0, 0)
    assert binner.bins({"profile": {"age": 99}}) == (3, 0)
    assert binner.describe((2, 1)) == {"age": "[30, 50)", "segment": "student"}
    assert propensity_features(policy, ["x", "y"]) == ((4, 3), {"x": [1, 0], "y": []})
