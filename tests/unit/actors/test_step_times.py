"""A shard's step times: counted per kind of step in buckets, collector pauses included."""

from __future__ import annotations

import gc

from shush.actors.step_times import BOUNDS_MS, StepTimes


def test_steps_are_counted_in_buckets_with_their_total() -> None:
    steps = StepTimes()
    for ms in (0.5, 1.0, 3.0, 3.0, 700.0):
        steps.record("apply", ms)
    with steps.timed("journal"):
        pass
    wire = steps.to_wire()
    assert wire["bounds_ms"] == list(BOUNDS_MS)
    assert wire["steps"]["apply"] == {"counts": [2, 0, 2, 0, 0, 0, 0, 0, 0, 1],
                                      "total_ms": 707.5}
    assert sum(wire["steps"]["journal"]["counts"]) == 1


def test_collector_pauses_are_steps_of_their_generation() -> None:
    steps = StepTimes()
    steps.time_collections()
    try:
        gc.collect(0)
        gc.collect()
    finally:
        gc.callbacks.remove(steps._collection)
    assert {name: sum(c) for name, c in steps.counts.items()} == {"gc young": 1, "gc old": 1}
    assert steps.total_ms["gc old"] > 0
