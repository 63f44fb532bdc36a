"""Garbage-collector settings for processes that hold many customers.

A shard holds millions of small, long-lived objects (customer states, their dicts and
moments) and allocates many short-lived ones per event. With CPython's default thresholds
(700, 10, 10) the young generation is collected every few hundred allocations and the old
generations are rescanned often: on the bank benchmark that is about a quarter of a shard's
time (``benchmarks/bench_spine.py``, pure core: 8,600 events/s with the defaults, 10,900 with
these). Larger thresholds collect as much, less often: the state here has few reference
cycles, and a cycle is still found at the next collection. ``freeze`` moves what is resident
after recovery out of the collector's sight for good.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000
OLDER_THRESHOLDS = (20, 20)


def tune_for_resident_state() -> None:
    """Collect less often: call once when a shard process starts."""
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)


def freeze_resident() -> None:
    """Exempt everything alive now (e.g. customers just recovered) from future collections."""
    gc.collect()
    gc.freeze()
