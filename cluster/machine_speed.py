"""How fast this machine runs plain Python now, so that figures taken on different days can
be compared.

Benchmark rates depend on the CPU they ran on, and the machines here are shared and drift:
the same commit's pure core ran 36,000-43,000 events/s on one day and 15,100 on another.
Each benchmark report carries this figure: the time of a fixed pure-Python loop, best of a
few runs (a neighbour's burst of work does not count). Scale two reports' rates by the ratio
of their loop times before comparing them; it is a rough guide (the loop exercises the
interpreter, not the memory system), not a correction.
"""

from __future__ import annotations

import time

LOOP_ITERATIONS = 1_000_000


def python_loop_ms(repeats: int = 5) -> float:
    """Milliseconds for ``LOOP_ITERATIONS`` additions of squares, the best of ``repeats``."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        total = 0
        for i in range(LOOP_ITERATIONS):
            total += i * i
        best = min(best, time.perf_counter() - started)
    return round(best * 1000, 1)


def describe(loop_ms: float) -> str:
    return (f"machine speed: a {LOOP_ITERATIONS:,}-step pure-Python loop takes {loop_ms:.1f} ms"
            f" (lower is faster; compare runs on different days by it)")
