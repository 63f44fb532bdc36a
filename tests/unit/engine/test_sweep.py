"""The sweep: criteria as vectorized masks, once per episode, chunked cycles, durable state."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from shush.engine.customer import CustomerState
from shush.engine.errors import ConfigError
from shush.engine.hot_columns import HotColumns, HotColumnsSpec
from shush.engine.sweep import Sweep, SweepConfig, SweepCriterion, SweepCursor, rows_per_tick

DAY_MS = 86_400_000
T0 = 1_750_000_000_000
SPEC = HotColumnsSpec.model_validate({
    "signals": ["deposit", "login"],
    "numeric": [{"name": "churn_score"}],
    "categorical": [{"name": "segment"}],
    "sets": [{"name": "products"}],
})
NO_DEPOSIT = {"name": "no_deposit_30d", "when": {"absent": {"signal": "deposit",
                                                              "for_s": 2_592_000}},
              "moment": "no_recent_deposit", "urgency": 0.4, "half_life_s": 1_209_600}
CHURN = {"name": "churn_no_contact",
         "when": {"all": [{"field": "churn_score", "op": ">", "value": 0.8},
                          {"no_contact_for_s": 1_209_600}]},
         "moment": "churn_risk"}


def criterion(data: dict[str, Any]) -> SweepCriterion:
    return SweepCriterion.model_validate(data)


def put(cols: HotColumns, cid: str, deposit_ms: int | None = None, *,
        contact_ms: int | None = None, **profile: Any) -> int:
    state = CustomerState(cid)
    state.last = {"login": {"_at": T0}}
    if deposit_ms is not None:
        state.last["deposit"] = {"amount": 1.0, "_at": deposit_ms}
    state.profile = profile
    return cols.update(state, last_contact_ms=contact_ms)


def due_ids(sweep: Sweep, cols: HotColumns, now_ms: int) -> list[str]:
    return cols.ids(sweep.due(cols, now_ms))


def test_exactly_30_days_is_due_29_days_and_a_millisecond_short_are_not() -> None:
    cols = HotColumns(SPEC)
    put(cols, "d29", T0 - 29 * DAY_MS)
    put(cols, "d30", T0 - 30 * DAY_MS)
    put(cols, "d30-1ms", T0 - 30 * DAY_MS + 1)
    put(cols, "d31", T0 - 31 * DAY_MS)
    sweep = Sweep([criterion(NO_DEPOSIT)], SPEC)
    assert due_ids(sweep, cols, T0) == ["d30", "d31"]


def test_fires_once_per_episode_and_a_deposit_re_arms() -> None:
    cols = HotColumns(SPEC)
    put(cols, "alice", T0)
    sweep = Sweep([criterion(NO_DEPOSIT)], SPEC)
    assert due_ids(sweep, cols, T0 + 29 * DAY_MS) == []
    assert due_ids(sweep, cols, T0 + 31 * DAY_MS) == ["alice"]
    assert due_ids(sweep, cols, T0 + 32 * DAY_MS) == []  # same silence: not again
    put(cols, "alice", T0 + 33 * DAY_MS)  # a deposit
    assert due_ids(sweep, cols, T0 + 34 * DAY_MS) == []
    assert due_ids(sweep, cols, T0 + 62 * DAY_MS) == []  # 29 days after the deposit
    assert due_ids(sweep, cols, T0 + 63 * DAY_MS) == ["alice"]  # 30 days after it


def test_a_deposit_re_arms_even_if_no_check_saw_the_condition_false() -> None:
    cols = HotColumns(SPEC)
    put(cols, "bob", T0)
    sweep = Sweep([criterion(NO_DEPOSIT)], SPEC)
    assert due_ids(sweep, cols, T0 + 31 * DAY_MS) == ["bob"]
    put(cols, "bob", T0 + 35 * DAY_MS)
    assert due_ids(sweep, cols, T0 + 70 * DAY_MS) == ["bob"]  # next check 35 days later


def test_moment_id_names_the_episode_so_a_lost_state_repeats_the_same_id() -> None:
    cols = HotColumns(SPEC)
    put(cols, "carol", T0)
    found = Sweep([criterion(NO_DEPOSIT)], SPEC).check(cols, T0 + 31 * DAY_MS)[0]
    moment = found.moments(cols, T0 + 31 * DAY_MS)[0]
    assert moment.moment_id == f"sweep:no_deposit_30d@{T0}"
    assert (moment.name, moment.customer_id, moment.urgency) == ("no_recent_deposit", "carol", 0.4)
    assert moment.ttl_s == 4 * 1_209_600
    again = Sweep([criterion(NO_DEPOSIT)], SPEC).check(cols, T0 + 32 * DAY_MS)[0]
    assert again.moments(cols, T0 + 32 * DAY_MS)[0].moment_id == moment.moment_id


@pytest.mark.parametrize(("if_never", "expected"), [
    ("since_first_seen", ["old"]), ("due", ["new", "old"]), ("skip", []),
])
def test_never_deposited(if_never: str, expected: list[str]) -> None:
    cols = HotColumns(SPEC)
    for cid, first in (("old", T0 - 40 * DAY_MS), ("new", T0 - DAY_MS)):
        state = CustomerState(cid)
        state.last = {"login": {"_at": first}}
        cols.update(state)
    data = {**NO_DEPOSIT, "when": {"absent": {"signal": "deposit", "for_s": 2_592_000,
                                              "if_never": if_never}}}
    assert sorted(due_ids(Sweep([criterion(data)], SPEC), cols, T0)) == expected


def test_score_and_no_contact() -> None:
    cols = HotColumns(SPEC)
    put(cols, "hot-never-contacted", T0, churn_score=0.9)
    put(cols, "hot-contacted-13d", T0, churn_score=0.9, contact_ms=T0 - 13 * DAY_MS)
    put(cols, "hot-contacted-14d", T0, churn_score=0.9, contact_ms=T0 - 14 * DAY_MS)
    put(cols, "exactly-0.8", T0, churn_score=0.8)
    put(cols, "unknown-score", T0)
    sweep = Sweep([criterion(CHURN)], SPEC)
    assert due_ids(sweep, cols, T0) == ["hot-never-contacted", "hot-contacted-14d"]
    cols.set_contact("hot-contacted-14d", T0 + 1)  # the treatment was a contact: re-arms
    assert due_ids(sweep, cols, T0 + DAY_MS) == ["hot-contacted-13d"]  # now 14 days
    assert due_ids(sweep, cols, T0 + 14 * DAY_MS) == []
    assert due_ids(sweep, cols, T0 + 14 * DAY_MS + 1) == ["hot-contacted-14d"]


def test_any_not_in_and_set_conditions() -> None:
    cols = HotColumns(SPEC)
    put(cols, "a", T0, segment="student", products=["card"])
    put(cols, "b", T0, segment="mass", products=["card", "mortgage"])
    put(cols, "c", T0, segment="affluent", churn_score=0.1)
    cases = {
        "in": ({"field": "segment", "in": ["student", "affluent"]}, ["a", "c"]),
        "not": ({"not": {"field": "segment", "in": ["mass"]}}, ["a", "c"]),
        "has_any": ({"field": "products", "has_any": ["mortgage", "loan"]}, ["b"]),
        "has_all": ({"field": "products", "has_all": ["card", "mortgage"]}, ["b"]),
        "has_all_unknown": ({"field": "products", "has_all": ["card", "loan"]}, []),
        "any": ({"any": [{"field": "churn_score", "op": "<", "value": 0.5},
                         {"field": "segment", "in": ["student"]}]}, ["a", "c"]),
        "ne_skips_unknown": ({"field": "churn_score", "op": "!=", "value": 0.5}, ["c"]),
    }
    for name, (when, expected) in cases.items():
        sweep = Sweep([criterion({"name": name, "when": when, "moment": "m"})], SPEC)
        assert due_ids(sweep, cols, T0) == expected, name


def test_cooldown_and_interval_refire() -> None:
    cols = HotColumns(SPEC)
    put(cols, "a", T0)
    data = {**NO_DEPOSIT, "refire": "interval", "cooldown_s": 7 * 86_400}
    sweep = Sweep([criterion(data)], SPEC)
    assert due_ids(sweep, cols, T0 + 30 * DAY_MS) == ["a"]
    assert due_ids(sweep, cols, T0 + 36 * DAY_MS) == []
    assert due_ids(sweep, cols, T0 + 37 * DAY_MS) == ["a"]


def test_check_without_commit_marks_nothing() -> None:
    cols = HotColumns(SPEC)
    put(cols, "a", T0)
    sweep = Sweep([criterion(NO_DEPOSIT)], SPEC)
    preview = sweep.check(cols, T0 + 31 * DAY_MS, commit=False)
    assert preview[0].rows.tolist() == [0]
    assert due_ids(sweep, cols, T0 + 31 * DAY_MS) == ["a"]


def test_discarded_customers_are_never_due() -> None:
    cols = HotColumns(SPEC)
    put(cols, "a", T0)
    cols.discard("a")
    assert due_ids(Sweep([criterion(NO_DEPOSIT)], SPEC), cols, T0 + 40 * DAY_MS) == []


def test_cursor_walks_chunks_and_counts_cycles() -> None:
    cols = HotColumns(SPEC)
    for i in range(1000):
        put(cols, f"c{i}", T0 - (i % 40) * DAY_MS)
    reference = Sweep([criterion(NO_DEPOSIT)], SPEC).due(cols, T0)
    sweep, cursor = Sweep([criterion(NO_DEPOSIT)], SPEC), SweepCursor(chunk_rows=300)
    found: list[int] = []
    for step in range(4):
        for due in cursor.step(sweep, cols, T0 + step * 1000):
            found.extend(due.rows.tolist())
    assert sorted(found) == reference.tolist() and len(found) == 250
    p = cursor.progress
    assert (p.cycles, p.rows_checked, p.due_found, p.position) == (1, 1000, 250, 0)
    assert p.last_cycle_ms == 3000
    cursor.step(sweep, cols, T0 + 5000)
    assert cursor.progress.position == 300 and cursor.progress.due_found == 250


def test_sweep_state_survives_a_snapshot() -> None:
    cols = HotColumns(SPEC)
    put(cols, "a", T0)
    sweep = Sweep([criterion(NO_DEPOSIT)], SPEC)
    assert due_ids(sweep, cols, T0 + 31 * DAY_MS) == ["a"]
    restored = Sweep([criterion(NO_DEPOSIT), criterion(CHURN)], SPEC)
    restored.restore_state(sweep.state_to_bytes(cols.size))
    assert due_ids(restored, cols, T0 + 32 * DAY_MS) == []


def test_new_rows_after_a_check_are_armed() -> None:
    cols = HotColumns(SPEC, capacity=16)
    sweep = Sweep([criterion(NO_DEPOSIT)], SPEC)
    put(cols, "first", T0)
    assert due_ids(sweep, cols, T0 + DAY_MS) == []
    for i in range(40):
        put(cols, f"c{i}", T0)
    assert len(due_ids(sweep, cols, T0 + 31 * DAY_MS)) == 41


def test_compile_errors_name_the_criterion_and_the_path() -> None:
    bad = {"name": "x", "moment": "m", "when": {"all": [
        {"absent": {"signal": "deposit", "for_s": 1}},
        {"field": "segment", "op": ">", "value": 1}]}}
    with pytest.raises(ConfigError) as err:
        Sweep([criterion(bad)], SPEC)
    assert err.value.field == "when.1.field" and "categorical" in err.value.reason
    with pytest.raises(ConfigError, match="not a hot column"):
        Sweep([criterion({**NO_DEPOSIT, "when": {"absent": {"signal": "payment",
                                                             "for_s": 1}}})], SPEC)
    with pytest.raises(ConfigError, match="twice"):
        Sweep([criterion(NO_DEPOSIT), criterion(NO_DEPOSIT)], SPEC)


def test_invalid_criteria_are_refused_by_validation() -> None:
    for when in ({"bogus": 1}, {"all": []}, {"absent": {"signal": "deposit", "for_s": 0}},
                 {"field": "x", "op": "~", "value": 1}):
        with pytest.raises(ValidationError):
            criterion({"name": "x", "moment": "m", "when": when})


def test_sweep_config_and_rows_per_tick() -> None:
    config = SweepConfig.model_validate({"criteria": [NO_DEPOSIT, CHURN],
                                         "hot_columns": SPEC.model_dump()})
    assert Sweep(config.criteria, config.hot_columns).criteria[1].name == "churn_no_contact"
    assert rows_per_tick(1_000_000, cadence_s=300, tick_s=0.05) == 167
    assert rows_per_tick(10, cadence_s=300, tick_s=0.05, min_rows=1000) == 1000


def test_due_is_vectorized_over_many_rows() -> None:
    cols = HotColumns(SPEC)
    rows = cols.add_many(f"c{i}" for i in range(50_000))
    cols.last_seen("deposit")[:] = T0 - (rows % 60) * DAY_MS
    due = Sweep([criterion(NO_DEPOSIT)], SPEC).due(cols, T0)
    assert due.tolist() == np.flatnonzero(rows % 60 >= 30).tolist()
