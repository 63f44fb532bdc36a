"""How long a Ray call waits on an async actor whose loop is busy, by GIL switch interval.

    python benchmarks/bench_gil_handoff.py [--calls 30] [--step-ms 2]

An actor's loop runs a task that computes in pure-Python steps of ``--step-ms`` (as a shard
applies a batch or settles a turn) and yields between them. Timed, for each switch interval
(``actors.gil``; Python's default is 5 ms):
1. replies: the busy actor calls an idle one and awaits the reply, with ``asyncio.wait_for``
   (what ``actors.ray_calls.call`` used before stop 20) and with ``asyncio.timeout``;
2. incoming calls: the driver calls the busy actor, whose steps yield with one ``sleep(0)``
   or with two (``actors.ray_calls.let_calls_in``).
Each line is p50 / p99 in ms over ``--calls`` calls; all rows come from one run, so compare
them with each other, not with another day's.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import numpy as np
import ray

from shush.cluster.machine_speed import describe, python_loop_ms
from shush.cluster.ray_runtime import start_ray, stop_ray

INTERVALS_MS = (5.0, 1.0, 0.2)


@ray.remote
class Idle:
    async def noop(self) -> int:
        return 1


@ray.remote
class Busy:
    def __init__(self, switch_ms: float, step_s: float) -> None:
        sys.setswitchinterval(switch_ms / 1000)
        self.step_s = step_s
        self.yields = 1
        self.task: asyncio.Task[None] | None = None

    async def _work(self) -> None:
        while True:
            started = time.perf_counter()
            while time.perf_counter() - started < self.step_s:
                pass
            for _ in range(self.yields):
                await asyncio.sleep(0)

    async def start(self, yields: int) -> None:
        self.yields = yields
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._work())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None

    async def replies(self, idle: Any, style: str, calls: int) -> list[float]:
        await self.start(2)
        took = []
        for _ in range(calls):
            started = time.perf_counter()
            if style == "wait_for":
                await asyncio.wait_for(idle.noop.remote(), 600)
            else:
                async with asyncio.timeout(600):
                    await idle.noop.remote()
            took.append((time.perf_counter() - started) * 1000)
        await self.stop()
        return took

    async def ping(self) -> int:
        return 1


def summary(took: list[float]) -> str:
    values = np.array(took)
    return f"p50 {np.percentile(values, 50):8.2f}  p99 {np.percentile(values, 99):8.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--step-ms", type=float, default=2.0)
    args = parser.parse_args()
    print(describe(python_loop_ms()))
    start_ray(num_cpus=2)
    idle = Idle.remote()  # type: ignore[attr-defined]
    ray.get(idle.noop.remote())
    print(f"a loop busy in {args.step_ms:g} ms steps; ms per call (p50 / p99, {args.calls} calls)")
    for switch_ms in INTERVALS_MS:
        busy = Busy.remote(switch_ms, args.step_ms / 1000)  # type: ignore[attr-defined]
        ray.get(busy.ping.remote())
        for style in ("wait_for", "timeout"):
            took = ray.get(busy.replies.remote(idle, style, args.calls))
            print(f"  switch {switch_ms:>4g} ms, reply awaited with {style:8}:  {summary(took)}")
        for yields in (1, 2):
            ray.get(busy.start.remote(yields))
            took = []
            for _ in range(args.calls):
                started = time.perf_counter()
                ray.get(busy.ping.remote())
                took.append((time.perf_counter() - started) * 1000)
            ray.get(busy.stop.remote())
            print(f"  switch {switch_ms:>4g} ms, call in, {yields} sleep(0) per step: "
                  f"{summary(took)}")
        ray.kill(busy)
    stop_ray()


if __name__ == "__main__":
    main()
