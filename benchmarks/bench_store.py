"""Snapshot throughput of the state stores: customers written and loaded per second.

    python benchmarks/bench_store.py [--customers 50000] [--snapshot-bytes 300] [--batch 1000]
                                     [--step 256] [--mix-rounds 2000]
                                     [--postgres postgresql://postgres@127.0.0.1:5432/test]

Writes go in batches (one transaction per ``save_snapshots`` call), as a shard flushes them;
the load reads every partition back, as a restarted shard does. Then the time of one snapshot
step (``--step`` upserts in one call), alone and beside a thread that always wants the GIL, as
a shard's writes run beside Ray's threads. The SQLite file lives in a temporary directory;
PostgreSQL (optional) uses a throwaway schema, dropped afterwards.

Last, SQLite under a shard's write mix, once with the store's ``secure_delete = FAST`` and once
with Debian's default (``ON``): per round a journal entry (a batch of events), a ledger write
(3 treatments and their decisions) and its dispatch marks; every 40 rounds a snapshot step that
truncates the journal. CPU per call (the thread's, kernel included) and the WAL's growth.

Then a shard's snapshot rounds: ``--round-customers`` customers, each first snapshotted
as its first event comes (in random order), then every one re-snapshotted each round in
the shard's steps (at most 256 customers, partitions in order); CPU and WAL bytes per row
over the rounds.

And the ledger as it grows: ``--ledger-calls`` calls of 8 treatments (keys as the engine makes
them, customers drawn from 200,000) and their decisions, each followed by its dispatch marks;
CPU per treatment and WAL bytes per treatment over the second half, where the ledger's
random-keyed B-trees no longer fit a few pages.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shush.adapters.stores import (
    DecisionRow,
    MemoryStateStore,
    SnapshotRow,
    StateStore,
    TreatmentRow,
)
from shush.adapters.stores.sqlite import SqliteStateStore
from shush.engine.partitions import partition_of

NUM_PARTITIONS = 1024


def make_rows(customers: int, snapshot_bytes: int, at_ms: int) -> list[SnapshotRow]:
    return [
        SnapshotRow(f"customer-{i:08d}", partition_of(f"customer-{i:08d}", NUM_PARTITIONS),
                    os.urandom(snapshot_bytes), at_ms)
        for i in range(customers)
    ]


def write_rate(store: StateStore, epochs: dict[int, int], rows: list[SnapshotRow],
               batch: int) -> float:
    started = time.perf_counter()
    for start in range(0, len(rows), batch):
        store.save_snapshots(epochs, rows[start:start + batch])
    return len(rows) / (time.perf_counter() - started)


def load_rate(store: StateStore, expected: int) -> float:
    started = time.perf_counter()
    loaded = sum(1 for _ in store.load_snapshots(range(NUM_PARTITIONS)))
    elapsed = time.perf_counter() - started
    assert loaded == expected, (loaded, expected)
    return loaded / elapsed


def step_ms(store: StateStore, epochs: dict[int, int], rows: list[SnapshotRow], step: int,
            *, busy_thread: bool) -> str:
    """p50 / p90 / max of one ``save_snapshots`` call of ``step`` rows."""
    stop = threading.Event()

    def spin() -> None:  # pure Python: asks for the GIL whenever it lets go
        while not stop.is_set():
            sum(range(100))

    spinner = threading.Thread(target=spin, daemon=True)
    if busy_thread:
        spinner.start()
    took: list[float] = []
    try:
        for start in range(0, len(rows) - step + 1, step):
            chunk = rows[start:start + step]
            mine = {r.partition: epochs[r.partition] for r in chunk}  # a step's partitions
            started = time.perf_counter()
            store.save_snapshots(mine, chunk)
            took.append((time.perf_counter() - started) * 1000)
    finally:
        stop.set()
        if busy_thread:
            spinner.join()
    took.sort()
    return (f"p50 {took[len(took) // 2]:.2f} / p90 {took[len(took) * 9 // 10]:.2f} / "
            f"max {took[-1]:.2f} ms")


def bench(name: str, open_store: Callable[[], StateStore], args: argparse.Namespace) -> None:
    store = open_store()
    try:
        epoch = store.acquire_partitions(list(range(NUM_PARTITIONS)), "bench")
        epochs = dict.fromkeys(range(NUM_PARTITIONS), epoch)
        first = write_rate(store, epochs, make_rows(args.customers, args.snapshot_bytes, 1),
                           args.batch)
        again = write_rate(store, epochs, make_rows(args.customers, args.snapshot_bytes, 2),
                           args.batch)
        loads = load_rate(store, args.customers)
        rows = make_rows(min(args.customers, 64 * args.step), args.snapshot_bytes, 3)
        alone = step_ms(store, epochs, rows, args.step, busy_thread=False)
        beside = step_ms(store, epochs, rows, args.step, busy_thread=True)
    finally:
        store.close()
    print(f"{name:<10} insert {first:>10,.0f}/s   update {again:>10,.0f}/s"
          f"   load {loads:>10,.0f}/s   (customers/s)")
    print(f"{'':<10} a step of {args.step} upserts: alone {alone}; beside a busy thread "
          f"{beside}")


def write_mix(path: Path, secure_delete: str, rounds: int) -> str:
    """CPU per call of a shard's writes, and the WAL's growth (see the module's docstring)."""
    store = SqliteStateStore(path)
    store._conn.execute(f"PRAGMA secure_delete = {secure_delete}")
    cpu: dict[str, list[float]] = {"journal": [], "ledger": [], "marks": [], "snapshot": []}

    def timed(kind: str, write: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        started = time.thread_time()
        result = write(*args, **kwargs)
        cpu[kind].append((time.thread_time() - started) * 1e6)
        return result

    try:
        epoch = store.acquire_partitions(list(range(8)), "bench")
        epochs = dict.fromkeys(range(8), epoch)
        events, payload, decision = os.urandom(30_000), os.urandom(600), os.urandom(600)
        for i in range(rounds):
            seq = timed("journal", store.append_journal, epochs, events)
            treatments = [TreatmentRow(uuid.uuid4().hex, uuid.uuid4().hex, f"c{i}-{j}", "a",
                                       i, payload) for j in range(3)]
            decisions = [DecisionRow(row.customer_id, i, decision) for row in treatments]
            timed("ledger", store.record_treatments, treatments, decisions=decisions)
            timed("marks", store.mark_dispatched, [row.idempotency_key for row in treatments], i)
            if i % 40 == 39:
                step = [SnapshotRow(f"customer-{uuid.uuid4().int % 30_000:08d}", p % 8,
                                    os.urandom(800), i) for p in range(256)]
                timed("snapshot", store.save_snapshots, epochs, step,
                      journal_covered_to=seq - 20)
        wal_mb = os.path.getsize(f"{path}-wal") / 1e6
    finally:
        store.close()
    return ("; ".join(f"{kind} {statistics.median(us):,.0f}" for kind, us in cpu.items())
            + f" us CPU per call (p50); WAL {wal_mb:,.0f} MB after {rounds:,} rounds")


def ledger_growth(store: StateStore, calls: int, per_call: int = 8, *,
                  wal_bytes: Callable[[], int], server_cpu_s: Callable[[], float] | None = None,
                  before_measuring: Callable[[], None] | None = None) -> str:
    """CPU (ledger write, marks) and WAL bytes per treatment (see the module's docstring).

    ``wal_bytes``: the WAL written so far; ``server_cpu_s``: a database server's CPU time for
    this store's connection (PostgreSQL), if any; ``before_measuring`` runs at the half (a
    PostgreSQL checkpoint, so that the measured half pays its full-page writes as a long-running
    server does)."""
    payload, decision = os.urandom(700), os.urandom(600)
    ledger_us: list[float] = []
    marks_us: list[float] = []
    wal_from = server_from = 0.0
    for i in range(calls):
        if i == calls // 2:
            if before_measuring is not None:
                before_measuring()
            wal_from = wal_bytes()
            server_from = server_cpu_s() if server_cpu_s else 0.0
        at_ms = 1_700_000_000_000 + i
        customers = [f"customer-{(i * 7919 + j * 104729) % 200_000}" for j in range(per_call)]
        rows = [TreatmentRow(f"{c}|offer_{j % 5}|moment-{i}-{j}", uuid.uuid4().hex, c,
                             f"offer_{j % 5}", at_ms, payload)
                for j, c in enumerate(customers)]
        started = time.thread_time()
        store.record_treatments(rows, decisions=[DecisionRow(c, at_ms, decision)
                                                 for c in customers])
        recorded = time.thread_time()
        store.mark_dispatched([row.idempotency_key for row in rows], at_ms)
        if i >= calls // 2:
            ledger_us.append((recorded - started) * 1e6 / per_call)
            marks_us.append((time.thread_time() - recorded) * 1e6 / per_call)
    treatments = len(ledger_us) * per_call
    wal_kb = (wal_bytes() - wal_from) / 1024 / treatments
    server = (f"; the server {(server_cpu_s() - server_from) * 1e6 / treatments:.1f} us CPU"
              " per treatment" if server_cpu_s else "")
    return (f"ledger {statistics.median(ledger_us):.1f} + marks {statistics.median(marks_us):.1f}"
            f" us CPU per treatment (p50){server}; WAL {wal_kb:.1f} KB per treatment;"
            f" {calls * per_call:,} treatments")


def sqlite_ledger_growth(path: Path, calls: int) -> str:
    store = SqliteStateStore(path, checkpoint_interval_s=3600)  # the WAL keeps every write
    try:
        return ledger_growth(store, calls, wal_bytes=lambda: os.path.getsize(f"{path}-wal"))
    finally:
        store.close()


def postgres_ledger_growth(url: str, calls: int) -> str:
    """The ledger on PostgreSQL, in a throwaway schema: the client's CPU, the server's (its
    backend process for this connection: a local server) and the WAL."""
    import psutil
    import psycopg

    from shush.adapters.stores.postgres import PostgresStateStore

    schema = f"shush_bench_{uuid.uuid4().hex[:12]}"
    admin = psycopg.connect(url, autocommit=True)
    store = PostgresStateStore(url, schema=schema)
    backend = psutil.Process(store._conn.info.backend_pid)  # a benchmark may look inside

    def server_cpu_s() -> float:
        times = backend.cpu_times()
        return float(times.user + times.system)

    def wal_bytes() -> int:
        row = admin.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')").fetchone()
        return int(row[0]) if row else 0

    try:
        return ledger_growth(store, calls, wal_bytes=wal_bytes, server_cpu_s=server_cpu_s,
                             before_measuring=lambda: admin.execute("CHECKPOINT"))
    finally:
        store.close()
        admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        admin.close()


def snapshot_rounds(path: Path, customers: int, rounds: int = 3, row_bytes: int = 1400,
                    step_customers: int = 256) -> str:
    """CPU and WAL bytes per snapshot row in a shard's rounds (see the module's docstring)."""
    store = SqliteStateStore(path, checkpoint_interval_s=3600)  # the WAL keeps every write
    partitions = list(range(0, NUM_PARTITIONS, 2))  # shard 0 of 2
    epoch = store.acquire_partitions(partitions, "bench")
    ids = [f"customer-{i}" for i in range(customers)]
    partition = {c: partitions[partition_of(c, len(partitions))] for c in ids}
    by_partition: dict[int, list[str]] = {p: [] for p in partitions}
    for customer in ids:
        by_partition[partition[customer]].append(customer)
    steps: list[list[SnapshotRow]] = [[]]
    for p in partitions:  # a step takes whole partitions until it holds step_customers
        if len(steps[-1]) >= step_customers:
            steps.append([])
        steps[-1].extend(SnapshotRow(c, p, b"", 0) for c in by_partition[p])
    random.Random(1).shuffle(ids)
    cpu_s, rows = 0.0, 0
    try:
        data = os.urandom(row_bytes)
        for start in range(0, customers, 100):  # first snapshots, in the order events come
            chunk = [SnapshotRow(c, partition[c], data, 1) for c in ids[start:start + 100]]
            store.save_snapshots({p: epoch for p in {r.partition for r in chunk}}, chunk)
        with sqlite3.connect(path) as conn:  # the WAL from empty: its size is what was written
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        for _ in range(rounds):
            data = os.urandom(row_bytes)
            for step in steps:
                rows_now = [SnapshotRow(r.customer_id, r.partition, data, 2) for r in step]
                started = time.thread_time()
                store.save_snapshots({p: epoch for p in {r.partition for r in step}}, rows_now)
                cpu_s += time.thread_time() - started
                rows += len(step)
        wal_kb = os.path.getsize(f"{path}-wal") / 1024 / rows
    finally:
        store.close()
    return (f"{cpu_s / rows * 1e6:.1f} us CPU and {wal_kb:.2f} KB of WAL per row"
            f" ({customers:,} customers, {row_bytes:,}-byte rows, {rounds} rounds)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=50_000)
    parser.add_argument("--snapshot-bytes", type=int, default=300)
    parser.add_argument("--batch", type=int, default=1000, help="snapshots per save call")
    parser.add_argument("--step", type=int, default=256,
                        help="snapshots per call in the step timing (a shard's snapshot step)")
    parser.add_argument("--mix-rounds", type=int, default=2000,
                        help="rounds of the shard write mix (0: skip it)")
    parser.add_argument("--round-customers", type=int, default=10_000,
                        help="customers of the snapshot rounds (0: skip them)")
    parser.add_argument("--ledger-calls", type=int, default=6000,
                        help="calls of 8 treatments in the ledger's growth (0: skip it)")
    parser.add_argument("--postgres", default="", help="also bench PostgreSQL at this URL")
    args = parser.parse_args()
    print(f"{args.customers:,} customers, {args.snapshot_bytes}-byte snapshots,"
          f" batches of {args.batch}, {NUM_PARTITIONS} partitions")

    bench("memory", MemoryStateStore, args)
    with tempfile.TemporaryDirectory() as tmp:
        bench("sqlite", lambda: SqliteStateStore(Path(tmp) / "bench.db"), args)
    if args.postgres:
        import psycopg

        from shush.adapters.stores.postgres import PostgresStateStore

        schema = f"shush_bench_{uuid.uuid4().hex[:12]}"
        try:
            bench("postgres", lambda: PostgresStateStore(args.postgres, schema=schema), args)
        finally:
            with psycopg.connect(args.postgres, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    if args.mix_rounds:
        print("sqlite, a shard's write mix (journal, ledger, marks, snapshot steps):")
        for mode in ("FAST", "ON"):  # the store's setting, then Debian's default
            with tempfile.TemporaryDirectory() as tmp:
                print(f"  secure_delete {mode:<4}  "
                      f"{write_mix(Path(tmp) / 'mix.db', mode, args.mix_rounds)}")
    if args.round_customers:
        with tempfile.TemporaryDirectory() as tmp:
            print(f"sqlite, a shard's snapshot rounds: "
                  f"{snapshot_rounds(Path(tmp) / 'rounds.db', args.round_customers)}")
    if args.ledger_calls:
        with tempfile.TemporaryDirectory() as tmp:
            print(f"sqlite, the ledger as it grows: "
                  f"{sqlite_ledger_growth(Path(tmp) / 'ledger.db', args.ledger_calls)}")
        if args.postgres:
            print(f"postgres, the ledger as it grows: "
                  f"{postgres_ledger_growth(args.postgres, args.ledger_calls)}")


if __name__ == "__main__":
    main()
