"""Instructions per event of a shard's hot paths, counted by valgrind: the same on every run.

    .venv/bin/python benchmarks/bench_instructions.py [--batches 10] [--decided 1000]
                                      [--customers 2000] [--phase apply --phase decide]

Timings on this shared 2-core machine move by ±10-20 % from run to run, which hides the 1-5 %
a change to the per-event path makes (many of docs/performance-history.md's "within the
noise"). Here each phase runs twice in a child process under ``valgrind --tool=callgrind``,
with more work the second time, and the difference of the two instruction counts
(callgrind's ``Ir``) is divided by the work added: the start-up, imports and set-up cancel
out. With a fixed hash seed and one BLAS thread, two runs of the same code agree to within
one instruction per event, so a change's effect shows in one run each.
Instructions are not time: a change that saves memory traffic (cache misses) more than
instructions shows less here than it does in ``shush loadtest``.

Phases (the loadtest's workload: balance updates and small withdrawals, and 2 % large
withdrawals on fresh customers):
- ``apply``: a stored shard's turns of ``turn_events`` (journal left out: it is SQLite's),
  with its snapshot bookkeeping and hot columns; per event.
- ``decide``: candidates, scoring and settling one customer with a fresh moment into a
  treatment (memory store and channel); per decided customer.

Needs valgrind (Debian: ``apt-get install valgrind``); under it a phase takes ~1-2 minutes.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

PHASES = ("apply", "decide")
T0_MS = 1_767_225_600_000  # the engine's clock and the events' time: fixed, as all else here
COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


def _core(customers: int) -> tuple[Any, Any]:
    """A shard core like a shard actor's (persistence and hot columns) on a memory store."""
    from shush.actors.shard_always_on import ShardAlwaysOn
    from shush.actors.shard_core import ShardCore
    from shush.actors.shard_persistence import ShardPersistence
    from shush.adapters.channels.memory import MemoryChannel
    from shush.adapters.stores import MemoryStateStore
    from shush.cluster.config_loader import load_config, load_engine_catalog
    from shush.cluster.loadtest_workload import Population
    from shush.engine.clock import ManualClock

    config = load_config(num_shards=1)
    catalog = load_engine_catalog(config)
    store = MemoryStateStore()
    persistence = ShardPersistence(store, 0, config.partition_table(),
                                   config.shard.snapshot_interval_s,
                                   config.shard.max_replay_events)
    always_on = ShardAlwaysOn(config.sweep, config.runs, 1, catalog)
    core = ShardCore(0, catalog, config.shard, ManualClock(T0_MS), MemoryChannel(), store,
                     persistence, always_on, config.arbitration)
    population = Population(customers, tag="ir")
    for batch in population.profile_batches(1000, T0_MS):
        core.apply_events(batch, journal=False)
    core.take_awaiting()
    return core, population


def child(phase: str, work: int, customers: int) -> None:
    """The measured program. ``apply``: ``work`` batches of 1,000 events. ``decide``:
    ``abs(work)`` fresh customers' large withdrawals, applied, and decided when ``work`` is
    negative (the run without deciding is the baseline)."""
    from shush.actors import heap
    from shush.cluster.loadtest_workload import EventFactory
    from shush.engine.arbitration import ActionTable, arbitrate
    from shush.engine.propensity import PropensityModel

    heap.collect_rarely()  # collections as rare as in a shard process
    core, population = _core(customers)
    heap.freeze_resident()  # the set-up's objects, out of every later collection
    if phase == "apply":
        factory = EventFactory(population, 0, 1, 0.02, 7, trigger_rows=customers // 2)
        turn = core.config.turn_events
        for k in range(work):
            events, _ = factory.make_batch(k, 1000, T0_MS)
            for start in range(0, len(events), turn):
                core.apply_events(events[start:start + turn], journal=False)
                core.awaiting_decision.clear()
        return
    decide, fresh = work < 0, abs(work)
    core.apply_events([[f"ir-w{i}", f"ir-fresh-{i}", "savings_withdrawal", T0_MS, "bench",
                        {"amount": 7_000.0}] for i in range(fresh)], journal=False)
    if decide:
        actions = ActionTable(core.catalog.actions)
        model = PropensityModel(actions.ids, core.catalog.actions)
        for trigger, waiting in core.take_awaiting().items():
            step = core.config.turn_customers  # the shard's decision rounds
            for start in range(0, len(waiting), step):
                sets, removals = core.candidate_sets(waiting[start:start + step],
                                                     trigger=trigger)
                core.settle(arbitrate(sets, actions, model.mean()), removals, trigger)
        assert core.stats["decisions"] == fresh, core.stats


def instructions(phase: str, work: int, customers: int) -> int:
    """Instructions (callgrind's ``Ir``) of one child run."""
    result = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
         __file__, "--child", phase, "--work", str(work), "--customers", str(customers)],
        capture_output=True, text=True, check=False,
        # the same dict layouts every run, and no BLAS threads spinning for as long as it runs
        env={**os.environ, "PYTHONHASHSEED": "0", "OPENBLAS_NUM_THREADS": "1"})
    found = COLLECTED.search(result.stderr)
    if result.returncode != 0 or found is None:
        raise RuntimeError(f"valgrind run of {phase} failed ({result.returncode}):\n"
                           f"{result.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phase", action="append", choices=PHASES,
                        help="Phases to count (default: all)")
    parser.add_argument("--batches", type=int, default=10,
                        help="apply: 1,000-event batches added by the second run")
    parser.add_argument("--decided", type=int, default=1000,
                        help="decide: customers decided in the second run")
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--child", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.work, args.customers)
        return
    if shutil.which("valgrind") is None:
        sys.exit("bench_instructions needs valgrind (Debian: apt-get install valgrind)")
    for phase in args.phase or PHASES:
        if phase == "apply":
            base = instructions(phase, args.batches, args.customers)
            more = instructions(phase, 2 * args.batches, args.customers)
            per, unit = (more - base) / (args.batches * 1000), "event"
        else:
            base = instructions(phase, args.decided, args.customers)
            more = instructions(phase, -args.decided, args.customers)
            per, unit = (more - base) / args.decided, "decided customer"
        print(f"{phase:8}: {per:>10,.0f} instructions per {unit}  "
              f"(runs of {base:,} and {more:,})", flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
