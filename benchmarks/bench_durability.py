"""What durability costs a shard, in one process: snapshot size per customer, snapshot write
rate, replay rate (a restarted shard replaying its journal, which ``shard.max_replay_events``
bounds), activation rate (a passivated customer read back from the store and rebuilt), and
the memory a shard holds per customer, resident and once passivated (idle).

    python benchmarks/bench_durability.py [--events 100000] [--customers 20000]

Runs the shard body (``ShardCore`` with ``ShardPersistence``) on the bundled bank catalog over
SQLite and over the in-memory store; events/s of each is the journal's cost in the pure core.
The end-to-end comparison (client -> gRPC -> Ray) is in ``bench_spine.py``.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from workload import bank_events

from shush.actors import heap
from shush.actors.shard_always_on import ShardAlwaysOn
from shush.actors.shard_core import ShardCore
from shush.actors.shard_persistence import ShardPersistence
from shush.adapters.channels.memory import MemoryChannel
from shush.adapters.stores import make_store
from shush.cluster.config_loader import load_config, load_engine_catalog
from shush.engine.arbitration import ActionTable, arbitrate
from shush.engine.clock import ManualClock
from shush.engine.config import ShardConfig
from shush.engine.partitions import PartitionTable
from shush.engine.propensity import PropensityModel


def run(url: str, events: list[list[object]], start_ms: int) -> dict[str, float]:
    config = load_config()
    catalog = load_engine_catalog(config)
    store = make_store(url)
    clock = ManualClock(start_ms)

    def shard() -> tuple[ShardCore, ShardPersistence]:
        """A shard as a shard actor builds it: with its hot columns, which tell a customer
        new since the last snapshot from one to read back (a restart reads none of those)."""
        persistence = ShardPersistence(store, 0, PartitionTable.round_robin(1024, 1), 3600.0)
        always_on = ShardAlwaysOn(config.sweep, config.runs, 1, catalog)
        return ShardCore(0, catalog, ShardConfig(max_resident_customers=10**9), clock,
                         MemoryChannel(), store, persistence, always_on), persistence

    core, persistence = shard()
    table = ActionTable(catalog.actions)
    p = PropensityModel(table.ids, catalog.actions).mean()
    started = time.perf_counter()
    for offset in range(0, len(events), 2000):
        chunk = events[offset:offset + 2000]
        clock.set(max(clock.now_ms(), int(chunk[-1][3])))  # type: ignore[call-overload]
        core.apply_events(chunk)
        for trigger, customers in core.take_awaiting().items():
            sets, removals = core.candidate_sets(customers, trigger=trigger)
            core.settle(arbitrate(sets, table, p), removals, trigger)
    apply_s = time.perf_counter() - started
    started = time.perf_counter()
    core, persistence = shard()  # a restart: the journal holds every event, no snapshot yet
    replayed = core.recover()["replayed"]
    replay_s = time.perf_counter() - started
    customers = list(core.customers)
    started = time.perf_counter()
    persistence.snapshot(core.customers.get, clock.now_ms())
    snapshot_s = time.perf_counter() - started
    sizes = [len(row.data) for row in store.load_snapshots(persistence.partitions)]
    core.customers.clear()
    started = time.perf_counter()
    for customer_id in customers:
        assert core.find(customer_id) is not None
    activate_s = time.perf_counter() - started
    store.close()
    return {"events_per_s": len(events) / apply_s, "customers": len(customers),
            "snapshot_bytes_mean": sum(sizes) / len(sizes),
            "snapshot_bytes_max": max(sizes),
            "snapshots_per_s": len(customers) / snapshot_s,
            "replayed_per_s": replayed / replay_s,
            "activations_per_s": len(customers) / activate_s}


def memory_per_customer(url: str, events: list[list[object]], start_ms: int
                        ) -> dict[str, float]:
    """Python heap (tracemalloc, numpy columns included) of a shard per customer: resident,
    then idle once every customer is passivated (what stays: its hot-column row and index)."""
    config = load_config()
    catalog = load_engine_catalog(config)
    store = make_store(url)
    persistence = ShardPersistence(store, 0, PartitionTable.round_robin(1024, 1), 3600.0)
    clock = ManualClock(start_ms)
    always_on = ShardAlwaysOn(config.sweep, config.runs, 1, catalog)
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    core = ShardCore(0, catalog, ShardConfig(passivate_after_s=1.0), clock, MemoryChannel(),
                     store, persistence, always_on)
    for offset in range(0, len(events), 2000):
        chunk = events[offset:offset + 2000]
        clock.set(max(clock.now_ms(), int(chunk[-1][3])))  # type: ignore[call-overload]
        core.apply_events(chunk)
        core.take_awaiting()  # decisions are not what is measured here
    customers = len(core.customers)
    gc.collect()
    resident = tracemalloc.get_traced_memory()[0] - base
    core.passivate(clock.now_ms() + 10_000)
    gc.collect()
    idle = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert not core.customers
    store.close()
    return {"customers": customers, "resident_bytes": resident / customers,
            "idle_bytes": idle / customers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--customers", type=int, default=20_000)
    args = parser.parse_args()
    heap.collect_rarely()  # as in a shard process: the replay rate is a shard actor's
    start_ms = int(time.time() * 1000)
    events = bank_events(args.events, args.customers, start_ms=start_ms)
    workdir = Path(tempfile.mkdtemp(prefix="shush-durability-"))
    for label, url in (("in-memory store", "memory://"),
                       ("SQLite store", f"sqlite:///{workdir / 'bench.db'}")):
        r = run(url, events, start_ms)
        print(f"{label:16}: {r['events_per_s']:>8,.0f} events/s (journal + ledger); "
              f"{r['customers']:,} customers, snapshot {r['snapshot_bytes_mean']:,.0f} B mean "
              f"/ {r['snapshot_bytes_max']:,} B max, {r['snapshots_per_s']:,.0f} snapshots/s, "
              f"restart replays {r['replayed_per_s']:,.0f} events/s, "
              f"{r['activations_per_s']:,.0f} activations/s")
    m = memory_per_customer(f"sqlite:///{workdir / 'memory.db'}", events, start_ms)
    print(f"{'memory':16}: {m['resident_bytes']:,.0f} B per resident customer, "
          f"{m['idle_bytes']:,.0f} B per idle (passivated) customer "
          f"({m['customers']:,} customers, Python heap incl. numpy columns)")


if __name__ == "__main__":
    main()
