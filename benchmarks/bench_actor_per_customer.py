"""The design card read literally: one Ray actor per customer. The baseline Shush replaces.

    python benchmarks/bench_actor_per_customer.py [--actors 32] [--events 20000]
                                                  [--memory-budget-gb 6]

Each ``CustomerActor`` holds one customer and runs the same decision logic as Shush (a
``ShardCore`` with that one customer, the bank catalog's detectors and policies, arbitration
in the same process), one Ray call per event. Measured: the time to create the actors, their
memory (RSS and USS of their worker processes, via psutil) and events/s for the bench_spine
workload restricted to these customers.

1,000 actors would mean ~1,000 Python worker processes, far beyond this machine, so the run
creates ``--actors`` of them (in waves, stopping early when their memory passes the budget)
and *extrapolates* creation time and memory linearly to 1,000 — labelled as such. Events/s
is measured, not extrapolated: it is bounded by one call per event, not by the actor count.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import ray

sys.path.insert(0, str(Path(__file__).resolve().parent))

from workload import bank_events

CARD_CUSTOMERS = 1_000


@ray.remote(num_cpus=0)
class CustomerActor:
    """One customer: its state and the full decision logic, one event per call."""

    def __init__(self, customer_id: str, start_ms: int) -> None:
        from shush.actors.shard_core import ShardCore
        from shush.adapters.channels.memory import MemoryChannel
        from shush.adapters.stores import MemoryStateStore
        from shush.cluster.config_loader import load_config, load_engine_catalog
        from shush.engine.arbitration import ActionTable
        from shush.engine.clock import ManualClock
        from shush.engine.propensity import PropensityModel

        config = load_config(num_shards=1)
        catalog = load_engine_catalog(config)
        self.customer_id = customer_id
        self.clock = ManualClock(start_ms)
        self.channel = MemoryChannel()
        self.core = ShardCore(0, catalog, config.shard, self.clock, self.channel,
                              MemoryStateStore())
        self.actions = ActionTable(catalog.actions)
        self.model = PropensityModel(self.actions.ids, catalog.actions)

    def ready(self) -> int:
        return os.getpid()

    def handle(self, event: list[Any]) -> int:
        from shush.engine.arbitration import arbitrate

        self.clock.set(max(self.clock.now_ms(), int(event[3])))
        self.core.apply_events([event])
        for trigger, customers in self.core.take_awaiting().items():
            sets, removals = self.core.candidate_sets(customers, trigger=trigger)
            self.core.settle(arbitrate(sets, self.actions, self.model.mean()), removals,
                             trigger)
        return len(self.channel.sent)


def memory_of(pids: list[int]) -> tuple[float, float]:
    """RSS and USS (bytes) summed over ``pids``; USS counts no shared pages."""
    rss = uss = 0.0
    for pid in pids:
        try:
            info = psutil.Process(pid).memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rss += info.rss
        uss += info.uss
    return rss, uss


def run(actors: int = 32, events: int = 20_000, memory_budget_gb: float = 6.0,
        wave: int = 8, start_ms: int | None = None) -> dict[str, Any]:
    """Create up to ``actors`` customer actors, play the workload; Ray must be running."""
    start_ms = start_ms or int(time.time() * 1000)
    available = psutil.virtual_memory().available
    budget = min(memory_budget_gb * 1e9, available * 0.6)
    handles: list[Any] = []
    pids: list[int] = []
    created_s = 0.0
    rss = uss = 0.0
    while len(handles) < actors:
        size = min(wave, actors - len(handles))
        started = time.perf_counter()
        batch = [CustomerActor.remote(f"c{len(handles) + i}", start_ms)  # type: ignore[attr-defined]
                 for i in range(size)]
        pids.extend(ray.get([a.ready.remote() for a in batch]))
        created_s += time.perf_counter() - started
        handles.extend(batch)
        rss, uss = memory_of(pids)
        per_actor = rss / len(handles)
        if rss + per_actor * wave > budget:
            print(f"  stopping at {len(handles)} actors: {rss / 1e9:.1f} GB RSS, "
                  f"budget {budget / 1e9:.1f} GB")
            break
    n = len(handles)
    workload = bank_events(events, n, start_ms=start_ms)
    index = {f"c{i}": handle for i, handle in enumerate(handles)}
    started = time.perf_counter()
    refs = [index[str(e[1])].handle.remote(e) for e in workload]
    counts = ray.get(refs)
    took = time.perf_counter() - started
    last: dict[str, int] = {}
    for event, count in zip(workload, counts, strict=True):
        last[str(event[1])] = count
    treatments = sum(last.values())
    for handle in handles:
        ray.kill(handle)
    return {
        "actors": n, "create_s": created_s, "create_s_per_actor": created_s / n,
        "rss_bytes": rss, "uss_bytes": uss, "rss_per_actor": rss / n, "uss_per_actor": uss / n,
        "events": len(workload), "events_s": took, "events_per_s": len(workload) / took,
        "treatments": treatments,
        "extrapolated_create_s": created_s / n * CARD_CUSTOMERS,
        "extrapolated_rss_gb": rss / n * CARD_CUSTOMERS / 1e9,
        "extrapolated_uss_gb": uss / n * CARD_CUSTOMERS / 1e9,
    }


def print_result(result: dict[str, Any]) -> None:
    n = result["actors"]
    print(f"actor per customer, {n} actors (one worker process each), measured:")
    print(f"  creation: {result['create_s']:.1f} s ({result['create_s_per_actor'] * 1000:.0f} ms "
          f"per actor)")
    print(f"  memory: RSS {result['rss_bytes'] / 1e9:.2f} GB ({result['rss_per_actor'] / 1e6:.0f}"
          f" MB per actor), USS {result['uss_bytes'] / 1e9:.2f} GB "
          f"({result['uss_per_actor'] / 1e6:.0f} MB per actor, unshared)")
    print(f"  events: {result['events_per_s']:,.0f} events/s ({result['events']:,} events, one "
          f"call each, {result['events_s']:.1f} s; {result['treatments']:,} treatments)")
    print(f"extrapolated linearly to the card's {CARD_CUSTOMERS:,} customers (NOT measured): "
          f"creation ~{result['extrapolated_create_s']:.0f} s, RSS "
          f"~{result['extrapolated_rss_gb']:.0f} GB (USS ~{result['extrapolated_uss_gb']:.0f} "
          f"GB) — more than this machine has")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--actors", type=int, default=32, help="customer actors to create")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--memory-budget-gb", type=float, default=6.0,
                        help="stop creating actors past this RSS (never above ~8)")
    parser.add_argument("--num-cpus", type=int, default=2)
    args = parser.parse_args()
    from shush.cluster.ray_runtime import start_ray, stop_ray

    start_ray(num_cpus=args.num_cpus)
    try:
        print_result(run(args.actors, args.events, min(args.memory_budget_gb, 8.0)))
    finally:
        stop_ray()


if __name__ == "__main__":
    main()
