"""How long a batch of events took to reach its shard and be applied, stage by stage.

A trace of the way in is what showed where submit -> treatment latency goes (stop 18): each
hop is ~2 ms, and a batch's journal and apply ~3 ms, at 10,000 events/s. Recording it costs
a few clock reads per batch, so every shard keeps it in its health.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .step_times import StepTimes

# finer than the loop steps' bounds: each stage takes ~1-3 ms
PATH_BOUNDS_MS = (0.5, 1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 100, 200, 500)


class BatchPath:
    """The stages of the batches a shard applied, in buckets of ``PATH_BOUNDS_MS``.

    The gateway and the router stamp the batch with the wall-clock time it left them; the
    shard records each stage when the batch is applied: the two Ray calls, the router's own
    time (validating, splitting, waiting for a shard's window), the wait for earlier batches,
    and the journal and apply. Stamps from processes on other nodes carry their clocks' skew.
    ``shush loadtest`` prints it per shard, beside the loop steps.
    """

    STAGES = ("gateway → router", "in the router", "router → shard",
              "waiting for earlier batches", "journal and apply", "gateway → applied")

    def __init__(self) -> None:
        self.times = StepTimes(PATH_BOUNDS_MS)

    def record(self, stamps: Sequence[float | None], arrived_s: float, locked_s: float,
               applied_s: float) -> None:
        """``stamps``: when the gateway sent the batch (``None`` from a caller that does not
        stamp), when the router took it in and when it sent it on. Anything else is
        ignored: a stamp is a measurement, never a reason to refuse a batch."""
        if not (isinstance(stamps, list | tuple) and len(stamps) == 3
                and all(s is None or isinstance(s, int | float) for s in stamps)):
            return
        gateway_s, router_in_s, router_out_s = stamps
        if router_in_s is None or router_out_s is None:
            return
        record = self.times.record
        if gateway_s is not None:
            record("gateway → router", _ms(router_in_s - gateway_s))
            record("gateway → applied", _ms(applied_s - gateway_s))
        record("in the router", _ms(router_out_s - router_in_s))
        record("router → shard", _ms(arrived_s - router_out_s))
        record("waiting for earlier batches", _ms(locked_s - arrived_s))
        record("journal and apply", _ms(applied_s - locked_s))

    def to_wire(self) -> dict[str, Any]:
        return self.times.to_wire()


def _ms(seconds: float) -> float:
    return max(0.0, seconds * 1000)  # a clock a little ahead of another's is not a duration
