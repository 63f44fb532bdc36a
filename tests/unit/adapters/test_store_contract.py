"""The ``StateStore`` contract, run against every implementation (memory, SQLite, PostgreSQL).

PostgreSQL: the URL comes from ``SHUSH_TEST_POSTGRES_URL`` (default below). Each test gets its
own schema, dropped afterwards, so runs can share a database. Without a server the PostgreSQL
cases skip, except when ``CI=true``, where they fail.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from shush.adapters.stores import (
    DeadLetterRow,
    DecisionRow,
    FencedError,
    MemoryStateStore,
    SnapshotRow,
    StateStore,
    StoreError,
    StoreUnavailable,
    StoreUsageError,
    TimerKey,
    TimerRow,
    TreatmentRow,
    make_store,
)
from shush.adapters.stores.postgres import PostgresStateStore
from shush.adapters.stores.sqlite import SqliteStateStore
from shush.engine.errors import ConfigError, ShushError
from shush.engine.store import claim_partition_count

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
PAGE_SIZE = 3  # small, so that paging is exercised by a handful of rows


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_url() -> str:
    url = os.environ.get("SHUSH_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.Error as exc:
        message = (
            f"PostgreSQL not reachable at {url} ({exc}). To run these tests, start a server"
            " and set SHUSH_TEST_POSTGRES_URL=postgresql://user@host:port/db"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return url


class StoreHandles:
    """Opens handles (connections) on one backing store; closes them all at teardown."""

    def __init__(self, opener: Callable[[], StateStore], backend: str) -> None:
        self._opener = opener
        self.backend = backend
        self._opened: list[StateStore] = []

    def open(self) -> StateStore:
        store = self._opener()
        self._opened.append(store)
        return store

    def close_all(self) -> None:
        for store in self._opened:
            store.close()


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def handles(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreHandles]:
    backend: str = request.param
    if backend == "memory":
        shared = MemoryStateStore()
        yield StoreHandles(lambda: shared, backend)
        return
    if backend == "sqlite":
        path = tmp_path / "state.db"
        opened = StoreHandles(lambda: SqliteStateStore(path, page_size=PAGE_SIZE), backend)
        yield opened
        opened.close_all()
        return
    url: str = request.getfixturevalue("postgres_url")
    schema = f"shush_test_{uuid.uuid4().hex[:16]}"
    opened = StoreHandles(
        lambda: PostgresStateStore(url, schema=schema, page_size=PAGE_SIZE), backend
    )
    try:
        yield opened
    finally:
        opened.close_all()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture
def store(handles: StoreHandles) -> StateStore:
    return handles.open()


def snap(customer_id: str, partition: int, data: bytes = b"x", at_ms: int = 1) -> SnapshotRow:
    return SnapshotRow(customer_id, partition, data, at_ms)


def timer(customer_id: str, partition: int, timer_id: str, due_ms: int,
          payload: bytes = b"t") -> TimerRow:
    return TimerRow(customer_id, partition, timer_id, due_ms, payload)


def treatment(key: str, customer_id: str = "c1", decided_at_ms: int = 100) -> TreatmentRow:
    return TreatmentRow(key, f"t-{key}", customer_id, "offer", decided_at_ms, b"p-" + key.encode())


# -- the contract -------------------------------------------------------------------------------


def test_implements_the_protocol(store: StateStore) -> None:
    assert isinstance(store, StateStore)


def test_acquire_returns_an_epoch_above_every_current_one(store: StateStore) -> None:
    assert store.partition_epochs([1, 2]) == {1: 0, 2: 0}
    first = store.acquire_partitions([1, 2], "shard-a")
    assert first >= 1
    again = store.acquire_partitions([2], "shard-b")
    assert again > first
    wider = store.acquire_partitions([1, 2, 3], "shard-c")
    assert wider > again
    assert store.partition_epochs([1, 2, 3, 4]) == {1: wider, 2: wider, 3: wider, 4: 0}
    with pytest.raises(StoreUsageError):
        store.acquire_partitions([], "nobody")


def test_stale_epoch_snapshot_write_is_fenced_and_writes_nothing(handles: StoreHandles) -> None:
    old, new = handles.open(), handles.open()
    old_epoch = old.acquire_partitions([1, 2], "incarnation-1")
    old.save_snapshots({1: old_epoch, 2: old_epoch}, [snap("a", 1, b"v1"), snap("b", 2, b"v1")])
    new_epoch = new.acquire_partitions([2], "incarnation-2")

    with pytest.raises(FencedError) as caught:
        old.save_snapshots({1: old_epoch, 2: old_epoch},
                           [snap("a", 1, b"v2"), snap("b", 2, b"v2"), snap("c", 1, b"v2")])
    error = caught.value
    assert (error.partition, error.epoch, error.current_epoch) == (2, old_epoch, new_epoch)
    assert isinstance(error, StoreError) and isinstance(error, ShushError)
    # the whole call was refused, including the rows of the partition still owned
    assert new.load_snapshot("a") == snap("a", 1, b"v1")
    assert new.load_snapshot("b") == snap("b", 2, b"v1")
    assert new.load_snapshot("c") is None

    new.save_snapshots({2: new_epoch}, [snap("b", 2, b"v3")])
    assert old.load_snapshot("b") == snap("b", 2, b"v3")


def test_journal_timers_and_truncation_are_fenced(handles: StoreHandles) -> None:
    old, new = handles.open(), handles.open()
    old_epoch = old.acquire_partitions([5], "incarnation-1")
    assert old.append_journal({5: old_epoch}, b"e1") == 1
    old.put_timers({5: old_epoch}, [timer("a", 5, "t1", 10)])
    new_epoch = new.acquire_partitions([5], "incarnation-2")

    with pytest.raises(FencedError):
        old.append_journal({5: old_epoch}, b"e2")
    with pytest.raises(FencedError):
        old.put_timers({5: old_epoch}, [timer("a", 5, "t1", 99), timer("b", 5, "t2", 1)])
    with pytest.raises(FencedError):
        old.delete_timers({5: old_epoch}, [TimerKey("a", 5, "t1")])
    with pytest.raises(FencedError):
        old.save_snapshots({5: old_epoch}, [], journal_covered_to=1)

    assert [e.data for e in new.read_journal()] == [b"e1"]
    assert new.journal_marks([5]) == {5: 0}
    assert new.load_timers([5]) == [timer("a", 5, "t1", 10)]
    assert new.append_journal({5: new_epoch}, b"e2") == 2


def test_unacquired_partitions_and_unissued_epochs_are_fenced(store: StateStore) -> None:
    with pytest.raises(FencedError) as caught:
        store.append_journal({7: 0}, b"e")
    assert caught.value.current_epoch == 0
    with pytest.raises(FencedError):
        store.save_snapshots({7: 1}, [snap("a", 7)])
    epoch = store.acquire_partitions([7], "shard")
    with pytest.raises(FencedError) as caught:
        store.put_timers({7: epoch + 1}, [timer("a", 7, "t", 1)])
    assert (caught.value.epoch, caught.value.current_epoch) == (epoch + 1, epoch)
    assert store.load_snapshot("a") is None
    assert store.read_journal() == []
    assert store.load_timers([7]) == []


def test_rows_of_a_partition_without_an_epoch_are_refused(store: StateStore) -> None:
    epoch = store.acquire_partitions([1], "shard")
    with pytest.raises(StoreUsageError) as caught:
        store.save_snapshots({1: epoch}, [snap("a", 1), snap("b", 2)])
    assert caught.value.field == "rows"
    with pytest.raises(StoreUsageError) as caught:
        store.append_journal({}, b"an entry of no partition")
    assert caught.value.field == "partition_epochs"
    with pytest.raises(StoreUsageError):
        store.delete_timers({1: epoch}, [TimerKey("a", 2, "t")])
    assert store.load_snapshot("a") is None


def test_many_customers_snapshots_come_in_one_read(store: StateStore) -> None:
    epoch = store.acquire_partitions([1, 2], "shard")
    rows = [snap(f"c{i}", 1 + i % 2, f"v{i}".encode(), i) for i in range(1_200)]
    store.save_snapshots({1: epoch, 2: epoch}, rows)
    wanted = [f"c{i}" for i in range(0, 1_200, 2)] + ["nobody", "c0"]  # past a read's ids
    got = store.load_snapshots_of(wanted)
    assert sorted(got, key=lambda r: r.updated_at_ms) == rows[::2]  # each once, none unknown
    assert store.load_snapshots_of([]) == []


def test_snapshots_upsert_and_the_last_row_of_a_batch_wins(store: StateStore) -> None:
    epoch = store.acquire_partitions([1, 2], "shard")
    store.save_snapshots({1: epoch, 2: epoch}, [snap("a", 1, b"a1"), snap("b", 2, b"b1")])
    store.save_snapshots({1: epoch}, [snap("a", 1, b"a2", 5), snap("a", 1, b"a3", 6)])
    assert store.load_snapshot("a") == snap("a", 1, b"a3", 6)
    assert store.load_snapshot("b") == snap("b", 2, b"b1")
    assert store.load_snapshot("nobody") is None
    store.save_snapshots({1: epoch}, [])  # an empty batch is a no-op


def test_a_customer_keeps_the_partition_of_its_first_snapshot(store: StateStore) -> None:
    epoch = store.acquire_partitions([1, 2], "shard")
    store.save_snapshots({1: epoch}, [snap("a", 1, b"a1")])
    store.save_snapshots({2: epoch}, [snap("a", 2, b"a2")])  # only a new partition count does this
    assert [r.data for r in store.load_snapshots([1])] == [b"a2"]
    assert list(store.load_snapshots([2])) == []


def test_a_store_keeps_the_partition_count_it_was_first_used_with(store: StateStore) -> None:
    claim_partition_count(store, 1024)
    claim_partition_count(store, 1024)  # the same count again: fine
    with pytest.raises(ConfigError) as caught:
        claim_partition_count(store, 512)
    assert caught.value.field == "num_partitions"
    assert "1024 partitions" in str(caught.value) and "asks for 512" in str(caught.value)


def test_load_snapshots_pages_through_partitions_in_order(store: StateStore) -> None:
    epoch = store.acquire_partitions([1, 2, 3], "shard")
    rows = [snap(f"c{i:02d}", i % 3 + 1, bytes([i]) * 300, i) for i in range(20)]
    store.save_snapshots({1: epoch, 2: epoch, 3: epoch}, rows)
    loaded = list(store.load_snapshots([3, 1]))
    expected = sorted((r for r in rows if r.partition == 3), key=lambda r: r.customer_id)
    expected += sorted((r for r in rows if r.partition == 1), key=lambda r: r.customer_id)
    assert loaded == expected
    assert list(store.load_snapshots([9])) == []


def test_every_byte_value_comes_back_as_written(store: StateStore) -> None:
    data = bytes(range(256)) * 8 + b"\x00"  # NULs, quotes, backslashes, high bytes
    epoch = store.acquire_partitions([1], "shard")
    store.save_snapshots({1: epoch}, [snap("a", 1, data)])
    store.append_journal({1: epoch}, data)
    store.put_timers({1: epoch}, [timer("a", 1, "t", 5, data)])
    store.record_treatments([TreatmentRow("a|k", "t-1", "a", "offer", 100, data)],
                            decisions=[DecisionRow("a", 100, data)])
    store.dead_letter([DeadLetterRow("event", "bad", "type", data, 100)])
    store.save_model("m", data)
    assert store.load_snapshot("a") == snap("a", 1, data)
    assert [r.data for r in store.load_snapshots([1])] == [data]
    assert [e.data for e in store.read_journal()] == [data]
    assert [t.payload for t in store.load_timers([1])] == [data]
    assert [i.payload for i in store.pending_outbox(10)] == [data]
    assert [d.data for d in store.recent_decisions("a", 10)] == [data]
    assert [d.payload for d in store.read_dead_letters(10)] == [data]
    assert store.load_model("m") == data


def test_journal_sequences_grow_across_partitions_and_reads_page(store: StateStore) -> None:
    epoch = store.acquire_partitions([1, 2], "shard")
    assert store.append_journal({1: epoch}, b"a") == 1
    assert store.append_journal({1: epoch, 2: epoch}, b"b") == 2
    assert store.append_journal({2: epoch}, b"c") == 3
    assert [(e.seq, e.data) for e in store.read_journal()] == [(1, b"a"), (2, b"b"), (3, b"c")]
    assert store.journal_end() == 3
    assert [e.seq for e in store.read_journal(after_seq=1)] == [2, 3]
    assert [e.seq for e in store.read_journal(after_seq=1, limit=1)] == [2]
    with pytest.raises(StoreUsageError):
        store.read_journal(limit=0)


def test_an_entry_is_fenced_by_every_partition_it_names(store: StateStore) -> None:
    epoch = store.acquire_partitions([1, 2], "shard")
    newer = store.acquire_partitions([2], "next")
    with pytest.raises(FencedError) as caught:  # partition 2 moved on: nothing is written
        store.append_journal({1: epoch, 2: epoch}, b"x")
    assert caught.value.partition == 2
    assert store.read_journal() == []
    store.append_journal({1: epoch, 2: newer}, b"y")
    assert [e.data for e in store.read_journal()] == [b"y"]


def test_an_entry_stays_until_every_partitions_mark_passes_it(store: StateStore) -> None:
    epoch = store.acquire_partitions([1, 2, 3], "shard")
    first = store.append_journal({1: epoch, 2: epoch}, b"first")
    second = store.append_journal({3: epoch}, b"second")
    store.save_snapshots({1: epoch, 2: epoch}, [snap("a", 1)], journal_covered_to=second)
    assert store.journal_marks([1, 2, 3, 9]) == {1: second, 2: second, 3: 0, 9: 0}
    assert [e.data for e in store.read_journal()] == [b"first", b"second"]  # 3 needs both
    store.save_snapshots({3: epoch}, [], journal_covered_to=first)
    assert [e.data for e in store.read_journal()] == [b"second"]
    store.save_snapshots({1: epoch}, [], journal_covered_to=first)  # a mark never goes down
    assert store.journal_marks([1]) == {1: second}
    store.save_snapshots({3: epoch}, [], journal_covered_to=second)
    assert store.read_journal() == [] and store.journal_end() == 0
    # sequence numbers are never reused, whoever owns the partitions next
    newer = store.acquire_partitions([1, 2, 3], "next")
    assert store.append_journal({1: newer}, b"third") == second + 1


def test_timers_upsert_by_customer_and_timer_id(store: StateStore) -> None:
    epoch = store.acquire_partitions([1, 2], "shard")
    store.put_timers({1: epoch, 2: epoch}, [
        timer("a", 1, "absence", 500), timer("b", 2, "absence", 300),
        timer("a", 1, "absence", 400, b"moved"),  # later in the batch: wins
    ])
    store.put_timers({1: epoch}, [timer("a", 1, "deferred", 450)])
    assert store.load_timers([1, 2]) == [
        timer("b", 2, "absence", 300), timer("a", 1, "absence", 400, b"moved"),
        timer("a", 1, "deferred", 450),
    ]
    store.put_timers({1: epoch}, [timer("a", 1, "absence", 600, b"again")])
    assert store.load_timers([1]) == [timer("a", 1, "deferred", 450),
                                      timer("a", 1, "absence", 600, b"again")]


def test_due_timers_are_selected_by_time_partition_and_limit(store: StateStore) -> None:
    epoch = store.acquire_partitions([1, 2, 3], "shard")
    store.put_timers({1: epoch, 2: epoch, 3: epoch}, [
        timer("c", 1, "t", 100), timer("a", 1, "t", 100), timer("b", 2, "t", 50),
        timer("d", 1, "t", 101), timer("e", 3, "t", 10),
    ])
    due = store.due_timers([1, 2], now_ms=100, limit=10)
    assert [(t.customer_id, t.due_ms) for t in due] == [("b", 50), ("a", 100), ("c", 100)]
    assert [t.customer_id for t in store.due_timers([1, 2], now_ms=100, limit=2)] == ["b", "a"]
    assert store.due_timers([2], now_ms=49, limit=10) == []
    with pytest.raises(StoreUsageError):
        store.due_timers([1], now_ms=100, limit=0)


def test_delete_timers_counts_what_existed(store: StateStore) -> None:
    epoch = store.acquire_partitions([1, 2], "shard")
    store.put_timers({1: epoch}, [timer("a", 1, "t1", 1), timer("a", 1, "t2", 2)])
    deleted = store.delete_timers({1: epoch, 2: epoch}, [
        TimerKey("a", 1, "t1"), TimerKey("a", 1, "missing"), TimerKey("a", 2, "t2"),
    ])
    assert deleted == 1  # ("a", "t2") lives in partition 1, not 2
    assert store.load_timers([1, 2]) == [timer("a", 1, "t2", 2)]
    assert store.delete_timers({1: epoch}, []) == 0


def test_ledger_records_each_key_once_and_enqueues_it(store: StateStore) -> None:
    assert store.record_treatment(treatment("k1")) is True
    assert store.record_treatment(treatment("k1", decided_at_ms=999)) is False
    assert store.record_treatments([treatment("k2"), treatment("k1"), treatment("k2"),
                                    treatment("k3")]) == [True, False, False, True]
    assert store.record_treatments([]) == []
    assert store.treatment_count() == 3
    assert store.has_treatment("k2") and not store.has_treatment("k4")
    pending = store.pending_outbox(10)
    assert [item.idempotency_key for item in pending] == ["k1", "k2", "k3"]
    first = pending[0]
    assert (first.treatment_id, first.customer_id, first.action_id, first.payload) == (
        "t-k1", "c1", "offer", b"p-k1")
    assert (first.status, first.attempts, first.last_error) == ("pending", 0, "")
    assert (first.enqueued_at_ms, first.next_attempt_at_ms, first.dispatched_at_ms) == (
        100, 100, None)


def test_concurrent_duplicates_from_two_connections_record_once(handles: StoreHandles) -> None:
    keys = [f"key-{i}" for i in range(120)]
    stores = [handles.open(), handles.open()]
    barrier = threading.Barrier(len(stores))
    recorded: list[list[bool]] = [[] for _ in stores]
    errors: list[BaseException] = []

    def record(index: int) -> None:
        try:
            barrier.wait()
            for start in range(0, len(keys), 8):
                batch = [treatment(key) for key in keys[start:start + 8]]
                recorded[index].extend(stores[index].record_treatments(batch))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=record, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    assert [a + b for a, b in zip(*recorded, strict=True)] == [1] * len(keys)
    assert stores[0].treatment_count() == len(keys)
    assert len(stores[1].pending_outbox(1000)) == len(keys)


def test_outbox_dispatch_is_a_one_way_transition(store: StateStore) -> None:
    store.record_treatments([treatment("k1"), treatment("k2")])
    assert store.mark_dispatched(["k1"], at_ms=200) == 1
    assert store.mark_dispatched(["k1"], at_ms=300) == 0
    assert store.mark_failed("k1", "too late", 1) is False
    item = store.outbox_item("k1")
    assert item is not None
    assert (item.status, item.dispatched_at_ms, item.attempts) == ("dispatched", 200, 0)
    assert [i.idempotency_key for i in store.pending_outbox(10)] == ["k2"]
    assert store.mark_dispatched(["unknown"], at_ms=1) == 0
    assert store.outbox_item("unknown") is None


def test_outbox_dispatch_marks_a_batch_in_one_call(store: StateStore) -> None:
    store.record_treatments([treatment(f"k{i}") for i in range(4)])
    assert store.mark_dispatched(["k0"], at_ms=100) == 1
    assert store.mark_dispatched(["k0", "k1", "k2", "unknown"], at_ms=200) == 2
    assert [i.idempotency_key for i in store.pending_outbox(10)] == ["k3"]
    assert [store.outbox_item(k).dispatched_at_ms for k in ("k0", "k1", "k2")] == [100, 200, 200]
    assert store.mark_dispatched([], at_ms=300) == 0


def test_a_key_named_twice_in_one_call_is_marked_once(store: StateStore) -> None:
    store.record_treatments([treatment("k1"), treatment("k2")])
    assert store.mark_dispatched(["k1", "k1", "k2"], at_ms=200) == 2
    assert store.pending_outbox(10) == []


def test_outbox_failures_retry_later_or_end_for_good(store: StateStore) -> None:
    store.record_treatments([treatment("k1", decided_at_ms=100),
                             treatment("k2", decided_at_ms=110)])
    assert store.mark_failed("k1", "timeout", 1, retry_at_ms=500) is True
    item = store.outbox_item("k1")
    assert item is not None
    assert (item.status, item.attempts, item.last_error, item.next_attempt_at_ms) == (
        "pending", 1, "timeout", 500)
    assert [i.idempotency_key for i in store.pending_outbox(10, now_ms=200)] == ["k2"]
    assert [i.idempotency_key for i in store.pending_outbox(10, now_ms=500)] == ["k2", "k1"]
    assert [i.idempotency_key for i in store.pending_outbox(1)] == ["k2"]

    assert store.mark_failed("k1", "HTTP 410", 2) is True
    item = store.outbox_item("k1")
    assert item is not None
    assert (item.status, item.attempts, item.last_error) == ("failed", 2, "HTTP 410")
    assert store.mark_dispatched(["k1"], at_ms=600) == 0
    assert [i.idempotency_key for i in store.pending_outbox(10)] == ["k2"]
    assert store.has_treatment("k1")  # the ledger keeps the key: never sent twice
    with pytest.raises(StoreUsageError):
        store.pending_outbox(0)


def test_recent_decisions_are_newest_first(store: StateStore) -> None:
    store.append_decisions([DecisionRow("a", 100, b"d1"), DecisionRow("b", 150, b"other"),
                            DecisionRow("a", 300, b"d3"), DecisionRow("a", 200, b"d2")])
    store.append_decisions([DecisionRow("a", 300, b"d4")])  # same time: later append first
    store.append_decisions([])
    assert [d.data for d in store.recent_decisions("a", 10)] == [b"d4", b"d3", b"d2", b"d1"]
    assert store.recent_decisions("a", 2) == [DecisionRow("a", 300, b"d4"),
                                              DecisionRow("a", 300, b"d3")]
    assert store.recent_decisions("nobody", 5) == []


def test_treatments_and_their_decisions_are_recorded_together(store: StateStore) -> None:
    assert store.record_treatments([treatment("k1"), treatment("k1")],
                                   decisions=[DecisionRow("a", 100, b"why k1")]) == [True, False]
    assert store.record_treatments([treatment("k1")],
                                   decisions=[DecisionRow("a", 200, b"again")]) == [False]
    assert store.record_treatments([], decisions=[DecisionRow("b", 300, b"nothing sent")]) == []
    assert [d.data for d in store.recent_decisions("a", 5)] == [b"again", b"why k1"]
    assert [d.data for d in store.recent_decisions("b", 5)] == [b"nothing sent"]
    assert [i.idempotency_key for i in store.pending_outbox(5)] == ["k1"]



def ledger_row(customer_id: str, action_id: str, moment: str, at_ms: int) -> TreatmentRow:
    """A treatment keyed as the engine keys them: ``customer|action|moment``."""
    key = f"{customer_id}|{action_id}|{moment}"
    return TreatmentRow(key, f"t-{key}", customer_id, action_id, at_ms, b"p")


def test_treated_and_untreated_decisions_list_together_newest_first(store: StateStore) -> None:
    """However a store files a treated decision (the SQLite one finds it through its ledger
    row), Explain sees every decision once, by time and then by order of recording."""
    store.record_treatments([ledger_row("a", "offer", "m1", 100),
                             ledger_row("a", "service", "m1", 100)],  # winner and runner-up
                            decisions=[DecisionRow("a", 100, b"sent two")])
    store.append_decisions([DecisionRow("a", 200, b"nothing sent")])
    store.record_treatments([ledger_row("a", "offer", "m2", 200)],
                            decisions=[DecisionRow("a", 200, b"sent at 200")])
    store.record_treatments([ledger_row("a|b", "offer", "m1", 300)],  # "a|..." is not "a"'s
                            decisions=[DecisionRow("a|b", 300, b"other customer")])
    assert [d.data for d in store.recent_decisions("a", 10)] == [
        b"sent at 200", b"nothing sent", b"sent two"]
    assert store.recent_decisions("a", 1) == [DecisionRow("a", 200, b"sent at 200")]
    assert [d.data for d in store.recent_decisions("a|b", 10)] == [b"other customer"]


def test_a_decision_whose_treatment_was_sent_before_is_still_audited(
        store: StateStore) -> None:
    store.record_treatments([ledger_row("a", "offer", "m1", 100)],
                            decisions=[DecisionRow("a", 100, b"first")])
    assert store.record_treatments([ledger_row("a", "offer", "m1", 150)],  # a replay
                                   decisions=[DecisionRow("a", 150, b"again")]) == [False]
    assert [d.data for d in store.recent_decisions("a", 10)] == [b"again", b"first"]


def test_treated_decisions_follow_the_decisions_retention(store: StateStore) -> None:
    store.record_treatments([ledger_row("a", "offer", "m1", 100)],
                            decisions=[DecisionRow("a", 100, b"old")])
    store.record_treatments([ledger_row("a", "offer", "m2", 400)],
                            decisions=[DecisionRow("a", 400, b"recent")])
    store.mark_dispatched(["a|offer|m1", "a|offer|m2"], at_ms=400)
    assert store.purge_treatments(before_ms=300, limit=10) == 1  # the ledger row goes...
    assert not store.has_treatment("a|offer|m1")
    assert [d.data for d in store.recent_decisions("a", 10)] == [b"recent", b"old"]  # not it
    assert store.purge_decisions(before_ms=300, limit=10) == 1
    assert [d.data for d in store.recent_decisions("a", 10)] == [b"recent"]
    assert store.purge_decisions(before_ms=500, limit=10) == 1  # its ledger row stays
    assert store.recent_decisions("a", 10) == []
    assert store.has_treatment("a|offer|m2")


def test_write_transactions_are_timed_by_stage(store: StateStore) -> None:
    """Each write transaction adds one to every stage's counts (none in the memory store);
    a failed one adds nothing."""
    before = store.write_times()
    store.record_treatments([treatment("k1")], decisions=[DecisionRow("a", 100, b"why")])
    store.append_decisions([DecisionRow("a", 200, b"again")])
    with pytest.raises(StoreError):
        store.save_snapshots({7: 1}, [SnapshotRow("c", 7, b"x", 1)])  # partition never acquired
    after = store.write_times()
    assert after["bounds_ms"] == before["bounds_ms"]
    if isinstance(store, MemoryStateStore):
        assert after["steps"] == {}
        return
    assert len(after["steps"]) == 3
    for name, stage in after["steps"].items():
        earlier = before["steps"].get(name, {"counts": [0] * len(stage["counts"]),
                                            "total_ms": 0.0})
        assert len(stage["counts"]) == len(after["bounds_ms"]) + 1
        assert sum(stage["counts"]) - sum(earlier["counts"]) == 2, name
        assert stage["total_ms"] >= earlier["total_ms"]


def test_decisions_past_their_retention_are_purged_oldest_first(store: StateStore) -> None:
    store.append_decisions([DecisionRow("a", 100, b"d1"), DecisionRow("b", 150, b"b1"),
                            DecisionRow("a", 300, b"d3"), DecisionRow("a", 200, b"d2")])
    assert store.purge_decisions(before_ms=250, limit=2) == 2  # d1, then b1
    assert [d.data for d in store.recent_decisions("a", 10)] == [b"d3", b"d2"]
    assert store.recent_decisions("b", 10) == []
    assert store.purge_decisions(before_ms=250, limit=10) == 1  # d2; d3 is recent
    assert store.purge_decisions(before_ms=250, limit=10) == 0
    assert [d.data for d in store.recent_decisions("a", 10)] == [b"d3"]
    with pytest.raises(StoreUsageError):
        store.purge_decisions(before_ms=250, limit=0)


def test_settled_treatments_past_their_retention_are_purged(store: StateStore) -> None:
    store.record_treatments([treatment("sent", decided_at_ms=100),
                             treatment("failed", decided_at_ms=110),
                             treatment("pending", decided_at_ms=90),
                             treatment("recent", decided_at_ms=400)])
    store.mark_dispatched(["sent", "recent"], at_ms=120)
    store.mark_failed("failed", "HTTP 410", 3)
    assert store.purge_treatments(before_ms=300, limit=1) == 1  # the oldest settled: "sent"
    assert not store.has_treatment("sent") and store.outbox_item("sent") is None
    assert store.purge_treatments(before_ms=300, limit=10) == 1  # "failed"
    assert store.purge_treatments(before_ms=300, limit=10) == 0  # a pending send stays
    assert store.treatment_count() == 2
    assert [i.idempotency_key for i in store.pending_outbox(10)] == ["pending"]
    assert store.has_treatment("recent")
    assert store.record_treatments([treatment("sent")]) == [True]  # the key is free again
    with pytest.raises(StoreUsageError):
        store.purge_treatments(before_ms=300, limit=0)

def test_dead_letters_past_their_retention_are_purged_oldest_first(store: StateStore) -> None:
    store.dead_letter([DeadLetterRow("event", "late", "", b"a", 300),
                       DeadLetterRow("event", "bad type", "type", b"b", 100),
                       DeadLetterRow("outcome", "unknown", "treatment_id", b"c", 200)])
    assert store.purge_dead_letters(before_ms=250, limit=1) == 1  # b, the oldest
    assert [r.payload for r in store.read_dead_letters(10)] == [b"c", b"a"]
    assert store.purge_dead_letters(before_ms=250, limit=10) == 1
    assert store.purge_dead_letters(before_ms=250, limit=10) == 0
    assert [r.payload for r in store.read_dead_letters(10)] == [b"a"]
    with pytest.raises(StoreUsageError):
        store.purge_dead_letters(before_ms=250, limit=0)


def test_dead_letters_are_kept_and_read_newest_first(store: StateStore) -> None:
    assert store.dead_letter_count() == 0
    rows = [DeadLetterRow("event", "unknown signal type", "type", b"\x81\xa1x", 10),
            DeadLetterRow("treatment", "channel refused", "", b"", 20)]
    store.dead_letter(rows)
    store.dead_letter([DeadLetterRow("event", "too late", "occurred_at", b"late", 30)])
    store.dead_letter([])
    assert store.dead_letter_count() == 3
    assert store.read_dead_letters(10) == [
        DeadLetterRow("event", "too late", "occurred_at", b"late", 30), rows[1], rows[0]]
    assert store.read_dead_letters(1) == [
        DeadLetterRow("event", "too late", "occurred_at", b"late", 30)]


def test_models_are_saved_and_replaced_by_name(store: StateStore) -> None:
    assert store.load_model("propensity") is None
    store.save_model("propensity", b"v1")
    store.save_model("other", b"\x00" * 1000)
    store.save_model("propensity", b"v2")
    assert store.load_model("propensity") == b"v2"
    assert store.load_model("other") == b"\x00" * 1000


def test_everything_written_is_visible_to_a_new_connection(handles: StoreHandles) -> None:
    writer = handles.open()
    epoch = writer.acquire_partitions([1], "shard")
    writer.save_snapshots({1: epoch}, [snap("a", 1, b"state")])
    writer.append_journal({1: epoch}, b"e")
    writer.put_timers({1: epoch}, [timer("a", 1, "t", 5)])
    writer.record_treatment(treatment("k"))
    writer.append_decisions([DecisionRow("a", 1, b"d")])
    writer.dead_letter([DeadLetterRow("event", "bad", "", b"", 1)])
    writer.save_model("m", b"w")
    if handles.backend != "memory":
        writer.close()

    reader = handles.open()
    assert reader.partition_epochs([1]) == {1: epoch}
    assert reader.load_snapshot("a") == snap("a", 1, b"state")
    assert [e.data for e in reader.read_journal()] == [b"e"]
    assert reader.load_timers([1]) == [timer("a", 1, "t", 5)]
    assert reader.has_treatment("k") and len(reader.pending_outbox(5)) == 1
    assert reader.recent_decisions("a", 1) == [DecisionRow("a", 1, b"d")]
    assert reader.dead_letter_count() == 1
    assert reader.load_model("m") == b"w"


# -- implementation specifics -------------------------------------------------------------------


def test_make_store_opens_memory_and_sqlite(tmp_path: Path) -> None:
    assert isinstance(make_store("memory://"), MemoryStateStore)
    sqlite_store = make_store(f"sqlite:///{tmp_path / 'sub' / 'state.db'}")
    assert isinstance(sqlite_store, SqliteStateStore)
    sqlite_store.close()
    assert (tmp_path / "sub" / "state.db").exists()


def test_make_store_opens_postgres_in_the_schema_named(postgres_url: str) -> None:
    schema = f"shush_test_{uuid.uuid4().hex[:16]}"
    pg_store = make_store(f"{postgres_url}?schema={schema}&connect_timeout=3")
    try:
        assert isinstance(pg_store, PostgresStateStore) and pg_store.schema == schema
        pg_store.save_model("m", b"x")
    finally:
        pg_store.close()
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.mark.parametrize("url", ["redis://localhost", "sqlite://", "nothing"])
def test_make_store_refuses_unknown_urls(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make_store(url)
    assert caught.value.field == "store_url"


def test_postgres_schema_must_be_a_plain_identifier() -> None:
    with pytest.raises(StoreUsageError) as caught:
        PostgresStateStore("postgresql://unused", schema="x; DROP TABLE y")
    assert caught.value.field == "schema"


def test_the_public_surface_is_sorted() -> None:
    from shush.adapters import stores

    assert stores.__all__ == sorted(stores.__all__)
    assert all(hasattr(stores, name) for name in stores.__all__)


def test_postgres_unreachable_is_store_unavailable() -> None:
    with pytest.raises(StoreUnavailable) as caught:
        PostgresStateStore("postgresql://postgres@127.0.0.1:1/test", connect_timeout_s=2)
    assert caught.value.backend == "postgres"


def test_sqlite_lock_held_past_the_busy_timeout_is_store_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with SqliteStateStore(path, busy_timeout_s=0.05) as store:
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreUnavailable) as caught:
            store.record_treatment(treatment("k"))
        assert caught.value.backend == "sqlite"
        assert store.load_model("m") is None  # WAL: readers are not blocked by the writer
        holder.execute("ROLLBACK")
        holder.close()
        assert store.record_treatment(treatment("k")) is True  # usable again


@pytest.mark.parametrize("statement", [
    "UPDATE partitions SET epoch = epoch + 1 WHERE partition = 2",
    "DELETE FROM partitions WHERE partition = 2",
])
def test_sqlite_fences_an_epoch_moved_by_any_writer_of_the_file(tmp_path: Path,
                                                                 statement: str) -> None:
    """The store re-reads epochs only when the fencing generation moves; triggers move it, so
    an epoch changed by other code on the file (an older process, an operator) still fences."""
    path = tmp_path / "state.db"
    with SqliteStateStore(path) as store:
        epoch = store.acquire_partitions([1, 2], "shard-0")
        assert store.append_journal({1: epoch, 2: epoch}, b"e1") == 1  # both checked
        with sqlite3.connect(path, isolation_level=None) as other:
            other.execute(statement)
            other.execute("UPDATE partitions SET journal_mark = 1")  # not an epoch: no fence
        with pytest.raises(FencedError) as caught:
            store.append_journal({1: epoch, 2: epoch}, b"e2")
        assert caught.value.partition == 2
        assert store.append_journal({1: epoch}, b"e3") == 2  # partition 1 is still its own


def test_sqlite_lays_out_snapshot_rows_by_partition(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as conn:  # rows written before the layout: rowids 1, 2
        conn.executescript("""
            CREATE TABLE snapshots (customer_id TEXT PRIMARY KEY, partition INTEGER NOT NULL,
                                    data BLOB NOT NULL, updated_at_ms INTEGER NOT NULL);
            INSERT INTO snapshots VALUES ('old-a', 3, x'01', 1), ('old-b', 0, x'01', 1);
        """)
    with SqliteStateStore(path) as store:
        epoch = store.acquire_partitions([0, 3, 7], "shard-0")
        epochs = {0: epoch, 3: epoch, 7: epoch}
        store.save_snapshots(epochs, [snap("a", 7, b"1"), snap("b", 3, b"1"), snap("c", 7, b"1"),
                                      snap("old-a", 3, b"2"), snap("d", 0, b"1")])
        store.save_snapshots(epochs, [snap("a", 7, b"2"), snap("e", 7, b"1")])
        rowids = dict(store._conn.execute("SELECT customer_id, rowid FROM snapshots"))
        assert rowids == {"old-a": 1, "old-b": 2, "d": 3,  # partition 0's range starts at 0
                          "b": (3 << 32) + 1,
                          "a": (7 << 32) + 1, "c": (7 << 32) + 2, "e": (7 << 32) + 3}
        assert store.load_snapshot("old-a") == snap("old-a", 3, b"2")
        assert store.load_snapshot("a") == snap("a", 7, b"2")
        assert [r.customer_id for r in store.load_snapshots([3])] == ["b", "old-a"]


def test_sqlite_moves_a_per_partition_journal_to_one_entry_per_batch(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:  # the layout of a file written before the change
        conn.executescript("""
            CREATE TABLE partitions (partition INTEGER PRIMARY KEY, epoch INTEGER NOT NULL,
                                     owner TEXT NOT NULL, journal_seq INTEGER NOT NULL DEFAULT 0);
            CREATE TABLE journal (partition INTEGER NOT NULL, seq INTEGER NOT NULL,
                                  data BLOB NOT NULL, PRIMARY KEY (partition, seq));
            INSERT INTO partitions VALUES (1, 3, 'shard-0', 2), (2, 3, 'shard-0', 1);
            INSERT INTO journal VALUES (2, 1, x'20'), (1, 2, x'12'), (1, 1, x'11');
        """)
    with SqliteStateStore(path) as store:
        assert [e.data for e in store.read_journal()] == [b"\x11", b"\x12", b"\x20"]
        assert store.journal_marks([1, 2]) == {1: 0, 2: 0}
        assert store.append_journal({1: 3}, b"new") == 4
    with sqlite3.connect(path) as conn:
        assert not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'journal'").fetchall()


@contextmanager
def _postgres_store_over(postgres_url: str, layout: Sequence[str]
                         ) -> Iterator[tuple[PostgresStateStore, Callable[[str], bool]]]:
    """A store opened on a fresh schema first laid out by ``layout`` (an earlier version's
    tables and rows), and a check of whether a table is still there; the schema is dropped
    afterwards."""
    schema = f"shush_test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"SET search_path TO {schema}")
        for statement in layout:
            conn.execute(statement)

    def has_table(name: str) -> bool:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            row = conn.execute("SELECT to_regclass(%s)", (f"{schema}.{name}",)).fetchone()
            return row is not None and row[0] is not None

    store = PostgresStateStore(postgres_url, schema=schema)
    try:
        yield store, has_table
    finally:
        store.close()
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def test_postgres_moves_a_per_partition_journal_to_one_entry_per_batch(
        postgres_url: str) -> None:
    layout = [  # the layout before the change
        "CREATE TABLE partitions (partition INTEGER PRIMARY KEY, epoch BIGINT NOT NULL,"
        " owner TEXT NOT NULL, journal_seq BIGINT NOT NULL DEFAULT 0)",
        "CREATE TABLE journal (partition INTEGER NOT NULL, seq BIGINT NOT NULL,"
        " data BYTEA NOT NULL, PRIMARY KEY (partition, seq))",
        "INSERT INTO partitions VALUES (1, 3, 'shard-0', 2), (2, 3, 'shard-0', 1)",
        "INSERT INTO journal VALUES (2, 1, '\\x20'), (1, 2, '\\x12'), (1, 1, '\\x11')",
    ]
    with _postgres_store_over(postgres_url, layout) as (store, has_table):
        assert [e.data for e in store.read_journal()] == [b"\x11", b"\x12", b"\x20"]
        assert store.journal_marks([1, 2]) == {1: 0, 2: 0}
        assert store.append_journal({1: 3}, b"new") == 4
        assert not has_table("journal")


# The ledger's layout while the outbox was a table of its own, and three sends in it: one
# dispatched, one failed for good, one waiting to be retried.
OLD_LEDGER = """
CREATE TABLE treatments (idempotency_key TEXT PRIMARY KEY, treatment_id TEXT NOT NULL,
    customer_id TEXT NOT NULL, action_id TEXT NOT NULL, decided_at_ms BIGINT NOT NULL,
    payload {blob} NOT NULL);
CREATE TABLE outbox (idempotency_key TEXT PRIMARY KEY REFERENCES treatments
    (idempotency_key), status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '', enqueued_at_ms BIGINT NOT NULL,
    next_attempt_at_ms BIGINT NOT NULL, dispatched_at_ms BIGINT);
CREATE INDEX outbox_by_status ON outbox (status, next_attempt_at_ms, idempotency_key);
INSERT INTO treatments VALUES ('sent', 't1', 'c1', 'a', 100, {p1}),
    ('failed', 't2', 'c2', 'a', 200, {p2}), ('retrying', 't3', 'c3', 'a', 300, {p3});
INSERT INTO outbox VALUES ('sent', 'dispatched', 0, '', 100, 100, 150),
    ('failed', 'failed', 3, 'channel down', 200, 200, NULL),
    ('retrying', 'pending', 1, 'timeout', 300, 900, NULL)
"""


def _check_moved_outbox(store: StateStore) -> None:
    sent, failed, retrying = (store.outbox_item(k) for k in ("sent", "failed", "retrying"))
    assert sent is not None and (sent.status, sent.dispatched_at_ms) == ("dispatched", 150)
    assert failed is not None and (failed.status, failed.attempts, failed.last_error) == (
        "failed", 3, "channel down")
    assert retrying is not None and (retrying.status, retrying.attempts,
                                     retrying.next_attempt_at_ms) == ("pending", 1, 900)
    assert retrying.payload == b"p3" and retrying.enqueued_at_ms == 300
    assert [i.idempotency_key for i in store.pending_outbox(10, now_ms=899)] == []
    assert store.record_treatments([treatment("new", decided_at_ms=400)]) == [True]
    assert [i.idempotency_key for i in store.pending_outbox(10)] == ["new", "retrying"]
    assert store.mark_dispatched(["retrying"], 1000) == 1


def test_postgres_plans_the_outbox_updates_with_their_keys_every_time(
        postgres_url: str) -> None:
    """A generic plan cached while the ledger is a few rows long scanned the partial index of
    pending rows for the key, and cost more with each treatment since the last vacuum (see
    ``PostgresStateStore._execute``): none is kept, however often the updates run."""
    with _postgres_store_over(postgres_url, ()) as (store, _):
        for i in range(12):
            store.record_treatments([treatment(f"k{i}"), treatment(f"f{i}")])
            assert store.mark_dispatched([f"k{i}"], at_ms=200) == 1
            assert store.mark_failed(f"f{i}", "timeout", 1, retry_at_ms=500) is True
        prepared = [row[0] for row in store._read("SELECT statement FROM pg_prepared_statements")]
        assert prepared, "psycopg prepared none of the other statements: the check sees nothing"
        assert not [s for s in prepared if s.lstrip().upper().startswith("UPDATE")], prepared


def test_postgres_journal_append_waiting_on_an_acquisition_is_fenced_by_it(
        postgres_url: str) -> None:
    """The append checks the epochs and writes in one statement: one that waited for an
    acquisition's lock sees the new epoch once it commits, and writes nothing."""
    with _postgres_store_over(postgres_url, ()) as (store, _):
        epoch = store.acquire_partitions([1], "old-shard")
        outcome: list[BaseException | int] = []
        with psycopg.connect(postgres_url) as acquiring:  # a new owner, mid-acquisition
            acquiring.execute(f"UPDATE {store.schema}.partitions SET epoch = epoch + 1,"
                              " owner = 'new-shard' WHERE partition = 1")

            def append() -> None:
                try:
                    outcome.append(store.append_journal({1: epoch}, b"late"))
                except BaseException as exc:  # handed to the test thread
                    outcome.append(exc)

            writer = threading.Thread(target=append)
            writer.start()
            writer.join(0.5)
            assert writer.is_alive(), "the append did not wait for the acquisition's lock"
            acquiring.commit()
            writer.join(10)
        assert len(outcome) == 1 and isinstance(outcome[0], FencedError), outcome
        assert (outcome[0].partition, outcome[0].current_epoch) == (1, epoch + 1)
        assert store.read_journal() == []


def test_sqlite_moves_a_separate_outbox_into_the_treatments_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(OLD_LEDGER.format(blob="BLOB", p1="x'7031'", p2="x'7032'",
                                             p3="x'7033'"))
    with SqliteStateStore(path) as store:
        _check_moved_outbox(store)
    with SqliteStateStore(path) as store:  # opened again: nothing left to move
        assert [i.idempotency_key for i in store.pending_outbox(10)] == ["new"]
    with sqlite3.connect(path) as conn:
        assert not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'outbox'").fetchall()


def test_postgres_moves_a_separate_outbox_into_the_treatments_rows(postgres_url: str) -> None:
    layout = OLD_LEDGER.format(blob="BYTEA", p1="'p1'::bytea", p2="'p2'::bytea",
                               p3="'p3'::bytea").split(";")
    with _postgres_store_over(postgres_url, layout) as (store, has_table):
        _check_moved_outbox(store)
        assert not has_table("outbox")


def test_sqlite_keeps_an_older_files_decisions_findable_by_customer(tmp_path: Path) -> None:
    """A file from before treated decisions were filed with their ledger rows: its decisions
    stay in the (now partial) index by customer, and new ones join them."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.executescript("""
            CREATE TABLE decisions (id INTEGER PRIMARY KEY, customer_id TEXT NOT NULL,
                                    decided_at_ms INTEGER NOT NULL, data BLOB NOT NULL);
            CREATE INDEX decisions_by_customer ON decisions (customer_id, decided_at_ms, id);
            INSERT INTO decisions VALUES (1, 'a', 100, x'6f6c64'), (2, 'b', 100, x'62');
        """)
    with SqliteStateStore(path) as store:
        store.record_treatments([ledger_row("a", "offer", "m1", 200)],
                                decisions=[DecisionRow("a", 200, b"new")])
        assert [d.data for d in store.recent_decisions("a", 10)] == [b"new", b"old"]
        plan = " ".join(str(row) for row in store._conn.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM decisions WHERE customer_id = 'a'"
            " AND treated = 0 ORDER BY decided_at_ms DESC, id DESC"))
        assert "decisions_untreated_by_customer" in plan
    with sqlite3.connect(path) as conn:
        assert not conn.execute(
            "SELECT 1 FROM sqlite_master WHERE name = 'decisions_by_customer'").fetchall()


def test_sqlite_runs_in_wal_mode_with_normal_sync_and_fast_secure_delete(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with SqliteStateStore(path) as store:
        store.save_model("m", b"x")
        assert store._conn.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
        assert store._conn.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
        assert store._conn.execute("PRAGMA secure_delete").fetchone() == (2,)  # FAST
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_sqlite_waits_for_a_lock_held_briefly_elsewhere(tmp_path: Path) -> None:
    """The store polls for the write lock itself (SQLite's busy handler oversleeps)."""
    path = tmp_path / "state.db"
    with SqliteStateStore(path, busy_timeout_s=5) as store:
        holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN IMMEDIATE")
        release = threading.Timer(0.05, holder.execute, ("ROLLBACK",))
        release.start()
        assert store.record_treatment(treatment("k")) is True  # written once the lock is free
        release.join()
        holder.close()


def test_sqlite_checkpoints_off_the_commit_path(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with SqliteStateStore(path, checkpoint_interval_s=3600) as store:  # no background turn
        for i in range(30):
            store.save_model(f"m{i}", b"x" * 5000)
        frames, copied = store.checkpoint()
        assert frames > 0 and copied == frames  # commits left every frame for the checkpoint
    other = tmp_path / "other.db"
    with SqliteStateStore(other, checkpoint_interval_s=0.05) as store:
        for i in range(30):
            store.save_model(f"m{i}", b"y" * 5000)
        deadline = time.monotonic() + 10
        while os.path.getsize(other) < 30 * 5000 and time.monotonic() < deadline:
            time.sleep(0.05)  # the background thread copies the WAL into the database file
        assert os.path.getsize(other) >= 30 * 5000
        assert store.load_model("m29") == b"y" * 5000



def test_sqlite_keeps_the_wal_bounded_under_writes_that_never_pause(tmp_path: Path) -> None:
    """A PASSIVE checkpoint never completes while writers keep appending, and SQLite only
    rewinds a WAL that a checkpoint completed: without a pause in the writes the WAL grows
    without end. Past ``wal_restart_bytes`` the checkpointer forces the rewind, and the file
    is cut back to that size."""
    path = tmp_path / "state.db"
    with SqliteStateStore(path, checkpoint_interval_s=0.02, wal_restart_bytes=256 * 1024
                          ) as store:
        written = 0
        sizes = []
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            store.save_model(f"m{len(sizes) % 50}", os.urandom(6000))
            written += 6000
            sizes.append(os.path.getsize(f"{path}-wal"))
        # unbounded, the WAL outgrows what was written (pages, not rows); here it is cut
        # back again and again, and holds at most a few checkpointer turns of writes
        assert sum(1 for a, b in itertools.pairwise(sizes) if b < a) >= 3
        assert max(sizes) < written / 3, f"WAL reached {max(sizes):,} of {written:,} bytes"
        assert store.load_model("m1") is not None


def test_sqlite_refuses_a_wal_bound_that_is_not_positive(tmp_path: Path) -> None:
    with pytest.raises(StoreUsageError, match="wal_restart_bytes"):
        SqliteStateStore(tmp_path / "state.db", wal_restart_bytes=0)

_WRITER = """
import sys
from shush.adapters.stores import SnapshotRow, TreatmentRow
from shush.adapters.stores.sqlite import SqliteStateStore

path, worker = sys.argv[1], int(sys.argv[2])
store = SqliteStateStore(path, busy_timeout_s=20)
epoch = store.acquire_partitions([worker], f"worker-{worker}")
new = 0
for batch in range(25):
    keys = [f"key-{(batch * 8 + i) % 150}" for i in range(8)]
    new += sum(store.record_treatments(
        [TreatmentRow(k, k, "c", "a", batch, b"") for k in keys]))
    store.save_snapshots({worker: epoch}, [
        SnapshotRow(f"w{worker}-c{batch}-{i}", worker, b"s" * 300, batch) for i in range(20)])
    for _ in range(10):
        store.append_journal({worker: epoch}, b"e")
store.close()
print(new)
"""


def test_sqlite_tolerates_several_processes_writing_one_file(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    SqliteStateStore(path).close()
    workers = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(path), str(worker)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for worker in range(3)
    ]
    outputs = [worker.communicate(timeout=60) for worker in workers]
    for worker, (_, stderr) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, stderr
    assert sum(int(stdout) for stdout, _ in outputs) == 150  # each key recorded by one writer
    with SqliteStateStore(path) as store:
        assert store.treatment_count() == 150
        assert len(list(store.load_snapshots([0, 1, 2]))) == 3 * 25 * 20
        assert len(store.read_journal()) == 3 * 250
