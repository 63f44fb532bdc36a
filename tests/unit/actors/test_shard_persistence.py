"""Snapshots in turns: each partition once per interval, its customers and journal together."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shush.actors import shard_persistence
from shush.actors.shard_persistence import ShardPersistence
from shush.adapters.stores import MemoryStateStore
from shush.adapters.stores.sqlite import SqliteStateStore
from shush.engine.customer import CustomerState
from shush.engine.errors import FencedError, StoreUnavailable
from shush.engine.partitions import PartitionTable
from tests.factories import T0_MS, event


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(shard_persistence.time, "monotonic", clock)
    return clock


def _customers(persistence: ShardPersistence, count: int) -> dict[str, CustomerState]:
    customers = {f"c{i}": CustomerState(f"c{i}") for i in range(count)}
    events = [event(c, "savings_withdrawal", amount=1.0) for c in customers]
    persistence.journal(events)
    persistence.touched(customers)
    return customers


def test_each_partition_has_its_turn_once_per_interval_spread_over_it(clock: Clock) -> None:
    persistence = ShardPersistence(MemoryStateStore(), 0, PartitionTable.round_robin(8, 1),
                                   snapshot_interval_s=1.0)
    customers = _customers(persistence, 40)
    changed = set(persistence.dirty)
    clock.now += 0.25
    first = persistence.due_partitions()
    clock.now += 0.75
    rest = persistence.due_partitions()
    assert len(first) <= 2 < len(rest)  # a quarter of the interval: a quarter of the turns
    assert set(first) | set(rest) == changed and not set(first) & set(rest)
    for part in (first, rest):
        persistence.snapshot(customers.get, T0_MS, part)
    assert not persistence.dirty
    assert len(list(persistence.load_customers())) == 40
    assert not persistence.store.read_journal()  # every partition's mark passed the entry


def test_a_busy_shard_has_its_turns_sooner_so_that_a_restart_replays_little(
        clock: Clock) -> None:
    persistence = ShardPersistence(MemoryStateStore(), 0, PartitionTable.round_robin(8, 1),
                                   snapshot_interval_s=3600.0, max_replay_events=80)
    _customers(persistence, 20)  # a quarter of max_replay_events, in no time
    assert len(persistence.due_partitions()) == 2  # a quarter of the turns
    clock.now += 60.0  # a minute of an hour-long interval, nothing journaled: no turn
    assert persistence.due_partitions() == []
    _customers(persistence, 60)
    assert len(persistence.due_partitions()) == 6  # the rest of the round
    interval_only = ShardPersistence(MemoryStateStore(), 0, PartitionTable.round_robin(8, 1),
                                     snapshot_interval_s=3600.0)
    _customers(interval_only, 80)
    assert interval_only.due_partitions() == []


def test_a_turn_saves_only_its_partitions_and_raises_only_their_journal_marks(
        clock: Clock) -> None:
    persistence = ShardPersistence(MemoryStateStore(), 0, PartitionTable.round_robin(8, 1),
                                   snapshot_interval_s=1.0)
    customers = _customers(persistence, 40)
    one, *others = sorted(persistence.dirty)
    saved = persistence.snapshot(customers.get, T0_MS, [one])
    assert saved == len([c for c in customers if persistence.partition(c) == one])
    assert one not in persistence.dirty and set(others) <= set(persistence.dirty)
    marks = persistence.store.journal_marks(persistence.partitions)
    assert marks[one] == 1 and all(marks[p] == 0 for p in others)
    assert len(persistence.store.read_journal()) == 1  # the other partitions still need it
    persistence.snapshot(customers.get, T0_MS, others)
    assert not persistence.store.read_journal()


def test_an_idle_shard_does_not_hold_the_journal_of_a_busy_one(clock: Clock) -> None:
    store, table = MemoryStateStore(), PartitionTable.round_robin(8, 2)
    busy, idle = (ShardPersistence(store, i, table, snapshot_interval_s=1.0) for i in (0, 1))
    customers = {c: CustomerState(c) for c in (f"c{i}" for i in range(40))
                 if table.shard_of(c) == 0}
    for _ in range(2):
        busy.journal([event(c, "savings_withdrawal", amount=1.0) for c in customers])
    busy.touched(customers)
    busy.snapshot(customers.get, T0_MS)
    assert len(store.read_journal()) == 2  # the idle shard's partitions have not passed them
    clock.now += 1.0  # the idle shard's turns: its marks move to the journal's end
    for partition in idle.due_partitions():
        idle.snapshot({}.get, T0_MS, [partition])
    assert store.read_journal() == []


def test_after_a_crash_each_new_shard_replays_its_partitions_above_their_marks(
        clock: Clock, tmp_path: Path) -> None:
    """One shard journals two batches and snapshots half its partitions in between; two
    shards take over (the partitions move). Each replays exactly the events of its own
    partitions that no snapshot covers, in order."""
    store = SqliteStateStore(tmp_path / "state.db")
    old = ShardPersistence(store, 0, PartitionTable.round_robin(8, 1), snapshot_interval_s=1.0)
    customers = {f"c{i}": CustomerState(f"c{i}") for i in range(40)}
    first = [event(c, "savings_withdrawal", amount=1.0) for c in customers]
    old.journal(first)
    old.touched(customers)
    saved = sorted(old.dirty)[:4]
    old.snapshot(customers.get, T0_MS, saved)  # these partitions now cover the first batch
    second = [event(c, "savings_withdrawal", amount=2.0) for c in customers]
    old.journal(second)  # ... and the shard dies before its next snapshot turn

    new_table = PartitionTable.round_robin(8, 2)
    new = [ShardPersistence(store, i, new_table, snapshot_interval_s=1.0) for i in (0, 1)]
    with pytest.raises(FencedError):  # the old incarnation is fenced off
        old.journal([event("c0", "savings_withdrawal", amount=3.0)])
    for shard in new:
        mine = set(shard.partitions)
        expected = [e[0] for e in first if shard.partition(e[1]) in mine
                    and shard.partition(e[1]) not in saved]
        expected += [e[0] for e in second if shard.partition(e[1]) in mine]
        assert [e[0] for e in shard.journaled_events()] == expected
    for shard in new:
        shard.snapshot({}.get, T0_MS, shard.partitions)
    assert store.read_journal() == []
    store.close()


def test_a_failed_snapshot_leaves_the_customers_changed(clock: Clock) -> None:
    class FailingStore(MemoryStateStore):
        def save_snapshots(self, *args: Any, **kwargs: Any) -> None:
            raise StoreUnavailable("disk full", backend="memory")

    persistence = ShardPersistence(FailingStore(), 0, PartitionTable.round_robin(8, 1),
                                   snapshot_interval_s=1.0)
    customers = _customers(persistence, 10)
    before = {p: set(c) for p, c in persistence.dirty.items()}
    with pytest.raises(StoreUnavailable):
        persistence.snapshot(customers.get, T0_MS)
    assert persistence.dirty == before


def test_snapshot_steps_are_bounded_by_changed_customers_and_partitions() -> None:
    persistence = ShardPersistence(MemoryStateStore(), 0, PartitionTable.round_robin(16, 1),
                                   snapshot_interval_s=1.0)
    _customers(persistence, 200)
    due = sorted(persistence.dirty)
    steps = persistence.steps(due, max_customers=40, max_partitions=5)
    assert [p for step in steps for p in step] == due  # every partition, once, in order
    for step in steps:
        changed = sum(len(persistence.dirty[p]) for p in step)
        assert len(step) <= 5
        assert len(step) == 1 or changed <= 40
    assert persistence.steps(due, max_customers=0, max_partitions=99) == [[p] for p in due]
    assert persistence.steps([], max_customers=40, max_partitions=5) == []


def test_a_customer_changed_while_its_snapshot_is_written_stays_changed(clock: Clock) -> None:
    persistence = ShardPersistence(MemoryStateStore(), 0, PartitionTable.round_robin(8, 1),
                                   snapshot_interval_s=1.0)
    customers = _customers(persistence, 40)
    partition = persistence.partition("c0")
    step = persistence.take_snapshot([partition])
    assert partition not in persistence.dirty  # taken: they leave the dirty set
    assert persistence.pack_rows(step, customers.get, T0_MS)
    persistence.touched(["c0"])  # a decision changes c0 while the step is being written
    persistence.write_snapshot(step)
    assert persistence.settle_snapshot(step, saved=True) == len(
        [c for c in customers if persistence.partition(c) == partition])
    assert persistence.dirty[partition] == {"c0"}  # saved again at its partition's next turn
    assert persistence.store.journal_marks([partition])[partition] == 1


def test_a_step_packs_in_chunks_each_customer_as_it_is_when_packed(clock: Clock) -> None:
    persistence = ShardPersistence(MemoryStateStore(), 0, PartitionTable.round_robin(8, 1),
                                   snapshot_interval_s=1.0)
    customers = _customers(persistence, 40)
    step = persistence.take_snapshot()
    assert not step.rows and len(step.pending) == 40 and not persistence.dirty
    assert not persistence.pack_rows(step, customers.get, T0_MS, limit=16)
    assert len(step.rows) == 16
    later = step.pending[0][1]  # not packed yet: changed between two chunks
    customers[later].profile["segment"] = "student"
    while not persistence.pack_rows(step, customers.get, T0_MS, limit=16):
        pass
    assert len(step.rows) == 40 and not step.pending
    persistence.write_snapshot(step)
    assert persistence.settle_snapshot(step, saved=True) == 40
    [row] = [r for r in persistence.store.load_snapshots(persistence.partitions)
             if r.customer_id == later]
    assert CustomerState.from_snapshot(shard_persistence._unpack(row.data)).profile == {
        "segment": "student"}


def test_touched_customers_marks_the_partitions_their_ids_hash_to() -> None:
    persistence = ShardPersistence(MemoryStateStore(), 0, PartitionTable.round_robin(8, 1),
                                   snapshot_interval_s=1.0)
    customers = [CustomerState(f"c{i}") for i in range(20)]
    persistence.touched_customers(customers)
    by_id = ShardPersistence(MemoryStateStore(), 0, PartitionTable.round_robin(8, 1),
                             snapshot_interval_s=1.0)
    by_id.touched(c.customer_id for c in customers)
    assert persistence.dirty == by_id.dirty
    assert all(c.partition == persistence.partition(c.customer_id) for c in customers)
    customers[0].partition = 7  # kept on the customer: not hashed again
    persistence.dirty.clear()
    persistence.touched_customers(customers[:1])
    assert persistence.dirty == {7: {"c0"}}


def test_the_replay_backlog_counts_what_a_restart_would_replay() -> None:
    """Events journaled since each partition's mark, what a restart replays: saving a
    partition takes its events off; past ``max_replay_events`` the shard is behind, and the
    partitions with the most to replay catch up first."""
    store = MemoryStateStore()
    table = PartitionTable.round_robin(4, 1)
    persistence = ShardPersistence(store, 0, table, snapshot_interval_s=60.0,
                                   max_replay_events=50)
    customers = {f"c{i}": CustomerState(f"c{i}") for i in range(40)}
    persistence.journal([event(c, "savings_withdrawal", amount=1.0)
                         for c in customers for _ in range(2)])
    persistence.touched(customers)
    assert persistence.unsaved_events == 80 and persistence.behind()
    per_partition = {p: 2 * sum(persistence.partition(c) == p for c in customers)
                     for p in range(4)}
    counts = sorted(per_partition.values(), reverse=True)
    step = persistence.catch_up_step(counts[0] + 1, max_partitions=4)
    # the largest, then the next: enough to cover the events asked for
    assert [per_partition[p] for p in step] == counts[:2]
    assert [per_partition[p] for p in persistence.catch_up_step(
        1_000, max_partitions=1)] == counts[:1]
    persistence.snapshot(customers.get, T0_MS, step)
    left = 80 - counts[0] - counts[1]
    assert persistence.unsaved_events == left and persistence.behind() == (left > 50)
    persistence.snapshot(customers.get, T0_MS)
    assert persistence.unsaved_events == 0 and not persistence.behind()
    # A restart replays nothing now; events journaled after the marks count again.
    persistence.journal([event("c0", "savings_withdrawal", amount=1.0)])
    again = ShardPersistence(store, 0, table, snapshot_interval_s=60.0, max_replay_events=50)
    assert len(list(again.journaled_events())) == 1 and again.unsaved_events == 1
    unbounded = ShardPersistence(MemoryStateStore(), 0, table, snapshot_interval_s=60.0)
    unbounded.journal([event(c, "savings_withdrawal", amount=1.0) for c in customers])
    assert unbounded.unsaved_events == 40 and not unbounded.behind()


def test_a_batch_counted_by_partition_already_is_journaled_with_those_counts() -> None:
    """A direct submit's events come counted per partition (the shard's checks counted
    them): the journal's fencing and the replay backlog use those counts as they are."""
    table = PartitionTable.round_robin(4, 1)
    events = [event(f"c{i}", "savings_withdrawal", amount=1.0) for i in range(12)]
    counts: dict[int, int] = {}
    for e in events:
        counts[table.partition(e[1])] = counts.get(table.partition(e[1]), 0) + 1
    counted = ShardPersistence(MemoryStateStore(), 0, table, snapshot_interval_s=60.0,
                               max_replay_events=50)
    counted.journal(events, counts=counts)
    itself = ShardPersistence(MemoryStateStore(), 0, table, snapshot_interval_s=60.0,
                              max_replay_events=50)
    itself.journal(events)
    assert counted.unsaved_events == itself.unsaved_events == 12
    assert [counted.catch_up_step(n, max_partitions=4) for n in (1, 12)] == [
        itself.catch_up_step(n, max_partitions=4) for n in (1, 12)]
    assert list(counted.journaled_events()) == events
