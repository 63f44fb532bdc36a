"""A shard freezes what survives (``actors.heap``): that leaks nothing only while its work
makes no reference cycles, which reference counting alone cannot free."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from shush.actors import heap
from shush.actors.scoring import scorer_for
from shush.actors.shard_always_on import ShardAlwaysOn
from shush.actors.shard_core import ShardCore
from shush.actors.shard_persistence import ShardPersistence
from shush.adapters.channels.memory import MemoryChannel
from shush.adapters.stores.sqlite import SqliteStateStore
from shush.cluster.config_loader import load_config, load_engine_catalog
from shush.engine.clock import ManualClock
from tests.factories import T0_MS, event


@pytest.fixture
def no_automatic_collection() -> Iterator[None]:
    """A clean heap (what earlier tests froze thawed and collected), then no collector."""
    gc.unfreeze()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _batch(round_: int, at_ms: int) -> list[list[object]]:
    """Bank events of every kind the catalog detects on, for 40 customers, and a late one."""
    events: list[list[object]] = []
    for c in range(40):
        customer = f"c{c}"
        events += [
            event(customer, "profile_update", at_ms, segment="mass", zip="35004"),
            event(customer, "balance_update", at_ms, balance=float(50 + (round_ * c) % 900)),
            event(customer, "savings_withdrawal", at_ms, amount=8000.0),
            event(customer, "card_declined", at_ms, amount=10.0),
        ]
    events.append(event("c0", "deposit", at_ms - 7_200_000, amount=1.0))  # dead-lettered
    return events


def test_a_shards_steady_state_work_makes_no_reference_cycles(
        tmp_path: Path, no_automatic_collection: None) -> None:
    config = load_config(data_dir=str(tmp_path), num_shards=1)
    catalog = load_engine_catalog(config)
    clock = ManualClock(T0_MS)
    store = SqliteStateStore(str(tmp_path / "state.db"))
    persistence = ShardPersistence(store, 0, config.partition_table(), 1.0)
    always_on = ShardAlwaysOn(config.sweep, config.runs, config.num_shards, catalog)
    core = ShardCore(0, catalog, config.shard, clock, MemoryChannel(), store, persistence,
                     always_on, config.arbitration)
    scorer = scorer_for(catalog, core.policy, config.arbitration)
    freezer = heap.SurvivorFreezer(0)
    core.recover()  # acquires its partitions, as a shard starting...
    heap.freeze_resident()  # ...and then collects and freezes what loading left

    def one_round(round_: int) -> None:
        clock.set(T0_MS + round_ * 60_000)
        core.apply_events(_batch(round_, clock.now_ms()))
        for trigger, customers in core.take_awaiting().items():
            sets, removals = core.candidate_sets(customers, trigger=trigger)
            core.settle(scorer.score(sets), removals, trigger)
        core.tick()
        core.always_on_step()
        core.record_outcomes([[t.treatment_id, t.customer_id, "opened", clock.now_ms()]
                              for t in core.channel.sent[-5:]])  # type: ignore[attr-defined]
        persistence.snapshot(core.customers.get, clock.now_ms())
        freezer.tick()

    try:
        one_round(0)  # first use: caches, prepared statements, lazily built tables
        gc.collect()
        for round_ in range(1, 6):
            one_round(round_)
        gc.unfreeze()
        assert gc.collect() == 0
        assert core.stats["treatments"] >= 40 and core.stats["late"] == 6
    finally:
        gc.unfreeze()
        store.close()


def test_the_freezer_collects_whole_once_per_interval(no_automatic_collection: None) -> None:
    now = [0.0]
    freezer = heap.SurvivorFreezer(600.0, clock=lambda: now[0])
    try:
        freezer.tick()  # frozen, cycle and all: nothing collects it...
        cycle: list[object] = []
        cycle.append(cycle)
        del cycle
        freezer.tick()
        assert gc.collect() == 0 and freezer.cycles_found == 0
        now[0] = 600.0  # ...until the whole heap's turn comes
        freezer.tick()
        assert freezer.cycles_found == 1 and gc.get_freeze_count() > 0
        now[0] = 900.0
        freezer.tick()
        assert freezer.next_full_s == 1200.0
    finally:
        gc.unfreeze()
