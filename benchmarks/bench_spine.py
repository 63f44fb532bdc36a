"""Events/s of the spine, end to end through the client, against the pure core in one process.

    python benchmarks/bench_spine.py [--events 200000] [--customers 20000] [--concurrency 4]

1. pure core: validation + shard core + arbitration math, one process, no Ray, no network —
   the ceiling for this code;
2. stored core: the same with what a shard actor adds around it (the SQLite store, journal,
   ledger, snapshot steps, hot columns, JSONL channel), still one process and no Ray: what
   the shards' durability costs, apart from Ray, the routers and the client;
3. end to end: AsyncShushClient -> gRPC -> routers -> shards -> arbitration -> JSONL channel,
   on the embedded default (local Ray), with several batches in flight.
All runs use the same workload. Their treatment counts agree up to events of one customer
that concurrent batches deliver out of order (a crossing follows event time, not arrival).

End to end has two rates: acknowledged (every batch journaled and applied; decisions follow
the ack) and decided (until the last treatment was decided). The pure core's rate includes
deciding, so the ceiling compares with the decided rate (before stop 20 the benchmarks
compared it with the acknowledged one, and a backlog of decisions left after the last ack
went unmeasured).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from workload import bank_events

from shush.actors import heap
from shush.actors.shard_core import ShardCore
from shush.adapters.channels.jsonl import read_jsonl
from shush.adapters.channels.memory import MemoryChannel
from shush.adapters.client import AsyncShushClient
from shush.adapters.stores import MemoryStateStore
from shush.cluster.config_loader import load_config, load_engine_catalog
from shush.engine.arbitration import ActionTable, arbitrate
from shush.engine.clock import ManualClock
from shush.engine.config import EngineConfig
from shush.engine.propensity import PropensityModel
from shush.engine.signals import validate_wire_event


def pure_core(events: list[list[object]], config: EngineConfig, batch: int,
              start_ms: int) -> tuple[float, float, int]:
    """The ceiling: the shards' decision logic alone (memory store and channel). Returns
    seconds, CPU seconds of the process and treatments."""
    catalog = load_engine_catalog(config)
    channel = MemoryChannel()
    clock = ManualClock(start_ms)
    shards = [ShardCore(i, catalog, config.shard, clock, channel, MemoryStateStore())
              for i in range(config.num_shards)]
    seconds, cpu_s = _drive(events, config, shards, clock, batch)
    return seconds, cpu_s, len(channel.sent)


def stored_core(events: list[list[object]], config: EngineConfig, batch: int,
                start_ms: int) -> tuple[float, float, int]:
    """The shards' logic with what a shard actor adds around it, still one process and no
    Ray: the configured store (one connection per shard, as the actors have), the journal,
    snapshot steps, the hot columns of the sweep and the JSONL channel. Returns seconds, CPU
    seconds of the process and treatments."""
    from shush.actors.shard import SNAPSHOT_CUSTOMERS_PER_STEP, SNAPSHOT_PARTITIONS_PER_STEP
    from shush.actors.shard_always_on import ShardAlwaysOn
    from shush.actors.shard_persistence import ShardPersistence
    from shush.adapters.channels.jsonl import JsonlChannel
    from shush.adapters.stores import make_store

    catalog = load_engine_catalog(config)
    clock = ManualClock(start_ms)
    table = config.partition_table()
    channel_path = Path(config.channel.path)
    shards, stores = [], []
    for i in range(config.num_shards):
        store = make_store(config.resolved_store_url)
        stores.append(store)
        persistence = ShardPersistence(store, i, table, config.shard.snapshot_interval_s,
                                       config.shard.max_replay_events)
        always_on = ShardAlwaysOn(config.sweep, config.runs, config.num_shards, catalog)
        shards.append(ShardCore(i, catalog, config.shard, clock, JsonlChannel(channel_path),
                                store, persistence, always_on))

    def snapshot_steps() -> None:  # a shard's maintenance tick, in one go
        for shard in shards:
            persistence = shard.persistence
            assert persistence is not None
            for step in persistence.steps(persistence.due_partitions(),
                                          max_customers=SNAPSHOT_CUSTOMERS_PER_STEP,
                                          max_partitions=SNAPSHOT_PARTITIONS_PER_STEP):
                persistence.snapshot(shard.customers.get, clock.now_ms(), step)

    try:
        seconds, cpu_s = _drive(events, config, shards, clock, batch, snapshot_steps)
    finally:
        for store in stores:
            store.close()
    return seconds, cpu_s, len(read_jsonl(channel_path))


def _drive(events: list[list[object]], config: EngineConfig, shards: list[ShardCore],
           clock: ManualClock, batch: int, maintain: Callable[[], None] | None = None
           ) -> tuple[float, float]:
    """Route, journal, apply and decide ``events`` in batches, as routers and shards do;
    return the seconds and the process's CPU seconds it took."""
    heap.collect_rarely()  # as in a shard process
    catalog = shards[0].catalog
    table = config.partition_table()
    actions = ActionTable(catalog.actions)
    model = PropensityModel(actions.ids, catalog.actions)
    freezer = heap.SurvivorFreezer(0)  # a shard freezes its heap every maintenance tick
    started, cpu_started = time.perf_counter(), time.process_time()
    for offset in range(0, len(events), batch):
        chunk = events[offset:offset + batch]
        clock.set(max(clock.now_ms(), int(chunk[-1][3])))  # type: ignore[call-overload]
        per_shard: dict[int, list[list[object]]] = {}
        for event in chunk:
            validate_wire_event(event, catalog.signal_schemas)
            per_shard.setdefault(table.shard_of(event[1]), []).append(event)
        for index, shard_events in per_shard.items():
            shard = shards[index]
            shard.apply_events(shard_events)  # journals first when the shard has a store
            for trigger, customers in shard.take_awaiting().items():
                sets, removals = shard.candidate_sets(customers, trigger=trigger)
                shard.settle(arbitrate(sets, actions, model.mean()), removals, trigger)
        if maintain is not None:
            maintain()
        freezer.tick()
    return time.perf_counter() - started, time.process_time() - cpu_started


def decided_by(channel: Path, started_s: float, expected: int, quiet_s: float = 2.0,
               timeout_s: float = 60.0) -> tuple[int, float]:
    """Wait for the treatments: ``expected`` of them, or none new for ``quiet_s``. Return how
    many, and the seconds from ``started_s`` (wall clock) to the last one's decision."""
    deadline = time.monotonic() + timeout_s
    count, changed = -1, time.monotonic()
    while time.monotonic() < deadline:
        now = len(read_jsonl(channel))
        if now != count:
            count, changed = now, time.monotonic()
        if count >= expected or time.monotonic() - changed >= quiet_s:
            break
        time.sleep(0.1)
    treatments = read_jsonl(channel)
    if not treatments:
        raise RuntimeError(f"no treatment reached {channel}: nothing to time the decisions by")
    last_ms = max(int(t["decided_at_ms"]) for t in treatments)
    return len(treatments), last_ms / 1000 - started_s


async def end_to_end(events: list[list[object]], target: str, batch: int,
                     concurrency: int, frames_target: str | None = None) -> float:
    """Seconds to have every batch acknowledged; over gRPC through the routers, or with
    ``frames_target`` over the frames edge, each batch split straight to its shards."""
    batches = [events[i:i + batch] for i in range(0, len(events), batch)]
    async with AsyncShushClient(target, batch_size=batch,
                                frames_target=frames_target) as client:
        queue: asyncio.Queue[list[list[object]]] = asyncio.Queue()
        for b in batches:
            queue.put_nowait(b)

        async def worker() -> None:
            while not queue.empty():
                result = await client.submit_wire(queue.get_nowait())
                assert not result.rejected, result.rejected[:3]

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=2_000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--routers", type=int, default=2)
    args = parser.parse_args()
    start_ms = int(time.time() * 1000)  # fresh events: stale moments would not trigger
    events = bank_events(args.events, args.customers, start_ms=start_ms)
    workdir = Path(tempfile.mkdtemp(prefix="shush-bench-"))
    config = load_config(num_shards=args.shards, num_routers=args.routers, grpc={"port": 0},
                         data_dir=str(workdir), channel={"path": str(workdir / "t.jsonl")})

    core_s, core_cpu, core_treatments = pure_core(events, config, args.batch, start_ms)
    print(f"{'pure core, one process, no Ray':38}: {args.events / core_s:>8,.0f} events/s  "
          f"({args.events:,} events in {core_s:.2f} s, {core_treatments:,} treatments; "
          f"{core_cpu / args.events * 1e6:.0f} us of CPU per event)")
    stored_dir = Path(tempfile.mkdtemp(prefix="shush-bench-", dir=workdir))
    stored_s, stored_cpu, stored_treatments = stored_core(
        events, config.model_copy(update={
            "data_dir": stored_dir,
            "channel": config.channel.model_copy(update={"path": stored_dir / "t.jsonl"})}),
        args.batch, start_ms)
    print(f"{'stored core (SQLite, JSONL), no Ray':38}: {args.events / stored_s:>8,.0f} "
          f"events/s  ({stored_treatments:,} treatments; "
          f"{stored_cpu / args.events * 1e6:.0f} us of CPU per event)")

    from shush.cluster.engine import Engine
    from shush.cluster.ray_runtime import start_ray, stop_ray

    start_ray(num_cpus=2)
    try:
        for label, store_url in (("end to end, in-memory store", "memory://"),
                                 ("end to end, SQLite store (default)", None)):
            run_dir = Path(tempfile.mkdtemp(prefix="shush-bench-", dir=workdir))
            run_config = config.model_copy(update={
                "store_url": store_url, "data_dir": run_dir,
                "channel": config.channel.model_copy(update={"path": run_dir / "t.jsonl"})})
            engine = Engine.start(run_config)
            engine.serve_grpc()
            try:
                started_s = time.time()
                acked_s = asyncio.run(end_to_end(events, engine.target, args.batch,
                                                 args.concurrency))
                treatments, decided_s = decided_by(run_dir / "t.jsonl", started_s,
                                                   core_treatments)
            finally:
                engine.stop()
            print(f"{label:38}: {args.events / decided_s:>8,.0f} events/s decided, "
                  f"{args.events / acked_s:,.0f} acknowledged  ({decided_s:.2f} s, "
                  f"{treatments:,} treatments; {args.routers} routers, {args.shards} shards, "
                  f"{args.concurrency} batches of {args.batch} in flight; "
                  f"{core_s / decided_s:.2f} of the ceiling)")
    finally:
        stop_ray()


if __name__ == "__main__":
    main()
