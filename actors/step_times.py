"""How long a shard's synchronous steps hold its event loop, per kind of step.

Everything on a shard's loop waits for the step running (an inbound Decide too), so the long
steps are what latency is made of: a turn of events, the journal's write, a snapshot chunk's
packing and the snapshot's write, a decision's settling, a collector pause. ``StepTimes``
counts each kind's durations in buckets of ``BOUNDS_MS`` (the last bucket: anything longer)
with their total. The counts only grow, so two readings (the shard's health) subtract to the
steps between them: ``shush loadtest`` prints that for its run. Timing a step costs two clock
reads; steps come by the hundred per second.
"""

from __future__ import annotations

import bisect
import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

BOUNDS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500)
# a store's write transactions, by stage: most take well under a millisecond
WRITE_BOUNDS_MS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100)
GC_STEPS = ("gc young", "gc middle", "gc old")  # a collection of each generation


class StepTimes:
    def __init__(self, bounds_ms: tuple[float, ...] = BOUNDS_MS) -> None:
        self.bounds_ms = bounds_ms
        self.counts: dict[str, list[int]] = {}
        self.total_ms: dict[str, float] = {}
        self._gc_started = 0.0

    def record(self, step: str, ms: float) -> None:
        counts = self.counts.get(step)
        if counts is None:
            counts = self.counts[step] = [0] * (len(self.bounds_ms) + 1)
            self.total_ms[step] = 0.0
        counts[bisect.bisect_left(self.bounds_ms, ms)] += 1
        self.total_ms[step] += ms

    @contextmanager
    def timed(self, step: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.record(step, (time.perf_counter() - started) * 1000)

    def time_collections(self) -> None:
        """Also count this process's collector pauses, as steps ``GC_STEPS``."""
        gc.callbacks.append(self._collection)

    def _collection(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.record(GC_STEPS[info["generation"]],
                        (time.perf_counter() - self._gc_started) * 1000)

    def to_wire(self) -> dict[str, Any]:
        return {"bounds_ms": list(self.bounds_ms),
                "steps": {step: {"counts": list(counts),
                                 "total_ms": round(self.total_ms[step], 3)}
                          for step, counts in self.counts.items()}}
