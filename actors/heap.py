"""Garbage-collector settings for processes that hold many customers, or handle many events.

A shard holds millions of small, long-lived objects (customer states, their dicts and
moments) and allocates many short-lived ones per event. With CPython's default thresholds
(700, 10, 10) the young generation is collected every few hundred allocations and the old
generations are rescanned often: on the bank benchmark that is about a quarter of a shard's
time (``benchmarks/bench_spine.py``, pure core: 8,600 events/s with the defaults, 10,900 with
these). Larger thresholds collect as much, less often: the state here has few reference
cycles, and a cycle is still found at the next collection.

A router and a load-test client hold no such state, but a request's events (a list and a dict
each, a thousand in a large batch) stay alive until the request is answered: with the default
thresholds a young collection ran every ~350 events and found them all alive, then rescanned
them in the older generations. Collecting as rarely as a shard does took 2-13 % off a router's
CPU per event at saturation (stop 44, four pairs of runs: 6.9-9.6 µs against 7.4-10.5).

What survives a while is customer state, and the older generations only fill with it: each
older collection rescans all of it, so its pause grows with the resident set (220-290 ms at
20,000 customers under load). So a shard moves what is alive out of the collector's sight
every maintenance tick (``SurvivorFreezer``): a collection then sees one tick's allocations
at most, and in a loadtest at 6,000 events/s none ran at all (against 4 young collections of
~20 ms per shard in 30 s without it). Frozen objects are still freed by reference counting
the moment the last reference goes: only a reference cycle among them would never be freed,
and a shard's steady-state work makes none (``tests/unit/actors/test_heap.py`` checks it;
a rare full collection frees any that other code makes).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

YOUNG_THRESHOLD = 50_000
OLDER_THRESHOLDS = (20, 20)


def collect_rarely() -> None:
    """Collect less often: call once when a shard's, router's or load-test client's process
    starts."""
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)


def freeze_resident() -> None:
    """Exempt everything alive now (e.g. customers just recovered) from future collections."""
    gc.collect()
    gc.freeze()


class SurvivorFreezer:
    """Freezes what is alive at each ``tick``, and now and then looks for cycles after all.

    A tick exempts what is alive from future collections, without collecting first (a
    collection would cost the pause this avoids; young objects frozen with the rest are freed
    by reference counting as usual). It takes constant time: the generations' lists are
    spliced, and the young generation's count starts again, so the collector hardly runs.
    Every ``full_collection_interval_s`` (0: never) a tick thaws everything and collects it
    whole instead, one long pause, so a cycle the code did make is freed after all;
    ``cycles_found`` counts what those collections found (0 says the interval could be 0).
    """

    def __init__(self, full_collection_interval_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = full_collection_interval_s
        self.clock = clock
        self.next_full_s = clock() + full_collection_interval_s
        self.cycles_found = 0

    def tick(self) -> None:
        if self.interval_s and self.clock() >= self.next_full_s:
            gc.unfreeze()
            self.cycles_found += gc.collect()
            self.next_full_s = self.clock() + self.interval_s
        gc.freeze()
