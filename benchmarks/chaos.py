"""Chaos, long form: steady load while shard and router actors are killed at random.

    python benchmarks/chaos.py [--duration 120] [--rate 300] [--kills 10] [--batch 20]
                               [--shards 2] [--routers 2] [--seed 7] [--dir DIR]

The same harness as ``tests/fault/test_chaos.py`` (``tests/fault/chaos_harness.py``): every
event goes to a customer of its own and makes exactly one treatment keyed by its event id; a
never-firing count detector logs, in customer state, every event applied. After a clean stop
the checker reads the store's snapshots and the JSONL channel and prints events sent,
acknowledged, applied, treatments, duplicates (must be 0), lost (must be 0) and the recovery
time of each kill. Exits 1 when anything was lost or repeated.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo: tests.* helpers

from shush.cluster.ray_runtime import start_ray, stop_ray
from tests.fault.chaos_harness import run_chaos


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of load")
    parser.add_argument("--rate", type=float, default=300.0, help="events per second")
    parser.add_argument("--kills", type=int, default=10, help="actors killed, spread evenly")
    parser.add_argument("--batch", type=int, default=20, help="events per client batch")
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--routers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7, help="which actors die, and when")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray")
    parser.add_argument("--dir", type=Path, default=None, help="keep the run's files here")
    args = parser.parse_args()
    directory = args.dir or Path(tempfile.mkdtemp(prefix="shush-chaos-"))
    start_ray(num_cpus=args.num_cpus, namespace="shush-chaos")
    try:
        report = run_chaos(directory, duration_s=args.duration, rate=args.rate,
                           kills=args.kills, batch_size=args.batch, seed=args.seed,
                           num_shards=args.shards, num_routers=args.routers,
                           settle_s=max(30.0, args.duration / 2))
    finally:
        stop_ray()
    print("\n".join(report.lines()))
    print(f"files: {directory}")
    print("OK: nothing lost, nothing repeated" if report.ok else "FAILED")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
