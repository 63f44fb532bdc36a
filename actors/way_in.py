"""How batches and inbound Decides reached a shard, and how long the shard took, stage by stage.

A trace of the way in is what showed where latency goes (stop 18): at 10,000 events/s each
hop is ~2 ms, and a batch's journal and apply ~3 ms. Recording it costs a few clock reads
per call, so every shard keeps it in its health (``way_in``), and ``shush loadtest`` prints
it per shard beside the loop steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .step_times import StepTimes

# finer than the loop steps' bounds: each stage takes ~1-3 ms
WAY_IN_BOUNDS_MS = (0.5, 1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 100, 200, 500)
DECIDE = "decide: "  # the prefix of a Decide's stages


class WayIn:
    """The stages of a shard's batches and Decides, in buckets of ``WAY_IN_BOUNDS_MS``.

    The gateway stamps a batch with the wall-clock time its request came in, the router with
    the times it took the batch in and sent it on; the shard records each stage when it is
    done. Since the gateway runs in the router's process (stop 19), "in the gateway" is the
    request's parsing and checks. A client's submit straight to the shard (stop 38) has no
    router: "in the gateway" is the request's parsing, "in the router" the shard edge's
    checks of its events, and "router → shard" is nil. Stamps from processes on other nodes
    carry their clocks' skew. A stamp that is not a number is ignored: it is a measurement, never a
    reason to refuse a call.
    """

    BATCH_STAGES = ("in the gateway", "in the router", "router → shard",
                    "waiting for earlier batches", "journal and apply", "gateway → applied")
    DECIDE_STAGES = (f"{DECIDE}gateway → shard", f"{DECIDE}waiting for the customer",
                     f"{DECIDE}deciding")

    def __init__(self) -> None:
        self.times = StepTimes(WAY_IN_BOUNDS_MS)

    def record_batch(self, stamps: Sequence[float | None], arrived_s: float, locked_s: float,
                     applied_s: float) -> None:
        """``stamps``: when the gateway took the request in (``None`` from a caller that does
        not stamp), when the router took it in and when it sent it on."""
        if not (isinstance(stamps, list | tuple) and len(stamps) == 3
                and all(_is_time(s) for s in stamps)):
            return
        gateway_s, router_in_s, router_out_s = stamps
        if router_in_s is None or router_out_s is None:
            return
        record = self.times.record
        if gateway_s is not None:
            record("in the gateway", _ms(router_in_s - gateway_s))
            record("gateway → applied", _ms(applied_s - gateway_s))
        record("in the router", _ms(router_out_s - router_in_s))
        record("router → shard", _ms(arrived_s - router_out_s))
        record("waiting for earlier batches", _ms(locked_s - arrived_s))
        record("journal and apply", _ms(applied_s - locked_s))

    def record_decide(self, sent_s: float | None, arrived_s: float, claimed_s: float,
                      done_s: float) -> None:
        """A Decide the gateway sent at ``sent_s``: its hop, its wait for the customer's
        decision in flight (if any) and the deciding (an arbitrator's call included)."""
        if sent_s is not None and _is_time(sent_s):
            self.times.record(f"{DECIDE}gateway → shard", _ms(arrived_s - sent_s))
        self.times.record(f"{DECIDE}waiting for the customer", _ms(claimed_s - arrived_s))
        self.times.record(f"{DECIDE}deciding", _ms(done_s - claimed_s))

    def to_wire(self) -> dict[str, Any]:
        return self.times.to_wire()


def _is_time(stamp: Any) -> bool:
    return stamp is None or (isinstance(stamp, int | float) and not isinstance(stamp, bool))


def _ms(seconds: float) -> float:
    return max(0.0, seconds * 1000)  # a clock a little ahead of another's is not a duration
