"""The sweep and emergency runs through the shard body, on a manual clock (no Ray)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shush.actors.shard_always_on import ShardAlwaysOn
from shush.actors.shard_core import ShardCore
from shush.adapters.channels.memory import MemoryChannel
from shush.adapters.stores import MemoryStateStore
from shush.engine.arbitration import ActionTable, arbitrate
from shush.engine.catalog import Catalog, load_catalog
from shush.engine.clock import ManualClock
from shush.engine.config import ShardConfig
from shush.engine.propensity import PropensityModel
from shush.engine.runs import EmergencyRun, PopulationFilter, RunsConfig, RunState
from shush.engine.sweep import SweepConfig, SweepCriterion
from tests.factories import COMPETING_CATALOG, T0_MS, event, write_catalog

DAY_MS = 86_400_000


def _catalog(tmp_path: Path) -> Catalog:
    data: dict[str, Any] = {k: list(v) for k, v in COMPETING_CATALOG.items()}
    data["signals"] = [*data["signals"],
                       {"type": "deposit", "category": "behavior-account",
                        "source": "core-banking",
                        "attributes": {"amount": {"type": "number"}}},
                       {"type": "address", "category": "profile-person", "source": "operator",
                        "updates_profile": True, "attributes": {"zip": {"type": "string"}}}]
    data["moments"] = ["no_recent_deposit", "storm_warning"]
    data["actions"] = [*data["actions"],
                       {"id": "miss_you", "kind": "marketing", "channel": "email", "value": 20,
                        "moments": ["no_recent_deposit"]},
                       {"id": "storm_help", "kind": "service", "channel": "sms", "value": 50,
                        "moments": ["storm_warning"]}]
    return load_catalog([write_catalog(tmp_path, data)])


class Harness:
    def __init__(self, catalog: Catalog, sweep: SweepConfig) -> None:
        self.clock = ManualClock(T0_MS)
        self.channel = MemoryChannel()
        self.always_on = ShardAlwaysOn(sweep, RunsConfig(), 1, catalog)
        self.core = ShardCore(0, catalog, ShardConfig(), self.clock, self.channel,
                              MemoryStateStore(), always_on=self.always_on)
        self.table = ActionTable(catalog.actions)
        self.p = PropensityModel(self.table.ids, catalog.actions).mean()

    def submit(self, *events: list[Any]) -> None:
        self.core.apply_events(events)
        self.decide()

    def decide(self) -> None:
        for trigger, customers in self.core.take_awaiting().items():
            sets, removals = self.core.candidate_sets(customers, trigger=trigger)
            self.core.settle(arbitrate(sets, self.table, self.p), removals, trigger)

    def step(self, at_ms: int) -> None:
        self.clock.set(at_ms)
        self.core.always_on_step()
        self.decide()

    def sent(self, action_id: str) -> list[str]:
        return [t.customer_id for t in self.channel.sent if t.action_id == action_id]


NO_DEPOSIT = SweepCriterion.model_validate({
    "name": "no_deposit_30d", "when": {"absent": {"signal": "deposit", "for_s": 30 * 86400}},
    "moment": "no_recent_deposit", "urgency": 0.6})


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    return _catalog(tmp_path)


def test_the_sweep_treats_a_customer_without_deposit_for_31_days_once(catalog: Catalog) -> None:
    h = Harness(catalog, SweepConfig(criteria=(NO_DEPOSIT,), min_chunk_rows=10))
    h.submit(event("old", "deposit", T0_MS, amount=10.0),
             event("recent", "deposit", T0_MS + 2 * DAY_MS, amount=10.0))
    h.step(T0_MS + 31 * DAY_MS)  # old: 31 days without a deposit; recent: 29
    assert h.sent("miss_you") == ["old"]
    h.step(T0_MS + 31 * DAY_MS + DAY_MS // 2)  # same episode: not again
    assert h.sent("miss_you") == ["old"]
    h.submit(event("old", "deposit", T0_MS + 33 * DAY_MS, amount=10.0))  # re-arms
    h.step(T0_MS + 40 * DAY_MS)  # recent: 38 days; old: 7 days since its new deposit
    assert h.sent("miss_you") == ["old", "recent"]
    h.step(T0_MS + 63 * DAY_MS)  # old: 30 days after the deposit that re-armed it
    assert h.sent("miss_you") == ["old", "recent", "old"]


def test_an_emergency_run_reaches_exactly_the_listed_zip_codes_each_once(
        catalog: Catalog) -> None:
    h = Harness(catalog, SweepConfig())
    zips = [f"{30300 + i:05d}" for i in range(25)]
    inside = [f"in-{i}" for i in range(50)]
    outside = [f"out-{i}" for i in range(30)]
    h.submit(*[event(c, "address", T0_MS, zip=zips[i % 25]) for i, c in enumerate(inside)],
             *[event(c, "address", T0_MS, zip=f"9{i:04d}") for i, c in enumerate(outside)])
    run = EmergencyRun(run_id="storm-1", population=PopulationFilter(zips=tuple(zips)),
                       moment="storm_warning", rate_per_s=20, dedup_key="nws:storm-1")
    progress = h.always_on.start_run(run, T0_MS)
    assert progress.selected == 50
    for second in range(1, 5):  # throttled: 20 a second (after a burst of 20)
        h.step(T0_MS + second * 1000)
    assert sorted(h.sent("storm_help")) == sorted(inside)
    # The same incident again (an alert update) treats nobody twice.
    again = run.model_copy(update={"run_id": "storm-1-update"})
    h.always_on.start_run(again, T0_MS + 5000)
    for second in range(6, 10):
        h.step(T0_MS + second * 1000)
    assert len(h.sent("storm_help")) == 50
    [first] = [p for p in h.always_on.progress() if p["run_id"] == "storm-1"]
    assert first["state"] == RunState.DONE and first["injected"] == 50
    assert first["treated"] == 50


def test_a_run_selects_by_the_zip_a_customer_moved_to_among_other_events(
        catalog: Catalog) -> None:
    h = Harness(catalog, SweepConfig())
    h.submit(event("mover", "address", T0_MS, zip="10001"),
             event("stayer", "address", T0_MS, zip="10001"))
    # a batch where only the mover's address changes, next to events of other kinds
    h.submit(event("stayer", "deposit", T0_MS + 1, amount=10.0),
             event("mover", "deposit", T0_MS + 1, amount=10.0),
             event("mover", "address", T0_MS + 2, zip="30301"),
             event("mover", "deposit", T0_MS + 3, amount=10.0))
    for zips, expected in ((("30301",), 1), (("10001",), 1)):
        run = EmergencyRun(run_id=f"run-{zips[0]}", population=PopulationFilter(zips=zips),
                           moment="storm_warning", rate_per_s=20, dedup_key=f"k-{zips[0]}")
        assert h.always_on.start_run(run, T0_MS + 10).selected == expected
    assert h.always_on.hot.ids(PopulationFilter(zips=("30301",)).select(h.always_on.hot)) == [
        "mover"]


def test_first_seen_is_the_earliest_event_a_shard_took_not_each_types_latest(
        catalog: Catalog) -> None:
    h = Harness(catalog, SweepConfig())
    # Two deposits in the customer's first batch: the earlier one is when it was first seen.
    h.submit(event("c", "deposit", T0_MS + 5, amount=1.0),
             event("c", "deposit", T0_MS, amount=2.0))
    hot = h.always_on.hot
    row = hot.row_of("c")
    assert row is not None and hot.first_seen[row] == T0_MS
    h.submit(event("c", "deposit", T0_MS + 9, "dup", amount=1.0),
             event("c", "deposit", T0_MS + 9, "dup", amount=1.0))  # a duplicate
    h.submit(event("c", "address", T0_MS - 2 * DAY_MS, zip="10001"))  # too late: rejected
    assert hot.first_seen[row] == T0_MS
    h.submit(event("c", "address", T0_MS - 3, zip="10001"))  # a new type, within lateness
    assert hot.first_seen[row] == T0_MS - 3
