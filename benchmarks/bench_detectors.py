"""Detector cost per event and state bytes per customer, for a catalog of 50 detectors.

    .venv/bin/python benchmarks/bench_detectors.py [--events 200000] [--customers 2000]

The catalog spreads 50 detectors of every signal-driven and timer kind over 5 signal types
(about 10 detectors per event). Events are random, in time order per customer, with a timer
tick every simulated minute, and the collector's settings of a shard process. Prints µs per
event (apply + timers), µs per detector evaluation, the msgpack snapshot size per customer
(mean and max), and the memory a customer takes once activated from its snapshot
(tracemalloc).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import tracemalloc
from typing import Any

from shush.actors import heap
from shush.engine.catalog import Catalog
from shush.engine.customer import CustomerState
from shush.engine.signals import SignalRecord
from shush.engine.timers import TimerWheel

TYPES = ("s0", "s1", "s2", "s3", "s4")
T0 = 1_750_000_000_000


def detectors() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, sig in enumerate(TYPES):
        nxt = TYPES[(i + 1) % len(TYPES)]
        p = f"{sig}_"
        out += [
            {"id": p + "thr", "kind": "threshold", "signal": sig, "attribute": "x", "op": ">",
             "value": 90, "reset": 50},
            {"id": p + "lvl", "kind": "threshold", "signal": sig, "attribute": "x", "op": "<",
             "value": 5, "mode": "level", "cooldown_s": 3600},
            {"id": p + "st", "kind": "status_change", "signal": sig, "attribute": "status",
             "key_attribute": "code", "to_values": ["bad"]},
            {"id": p + "cnt", "kind": "count", "signal": sig, "window_s": 3600, "at_least": 5},
            {"id": p + "dc", "kind": "distinct", "signal": sig, "attribute": "code",
             "window_s": 86400, "at_least": 3},
            {"id": p + "seq", "kind": "sequence", "steps": [{"signal": sig}, {"signal": nxt}],
             "window_s": 600},
            {"id": p + "nfb", "kind": "not_followed_by", "first": {"signal": sig},
             "then": {"signal": nxt}, "window_s": 1800, "cooldown_s": 3600},
            {"id": p + "abs", "kind": "absence", "signal": sig, "period_s": 7200},
            {"id": p + "z", "kind": "trend", "signal": sig, "attribute": "x",
             "z_threshold": 2.5, "points": 30},
            {"id": p + "fc", "kind": "forecast", "signal": sig, "attribute": "x", "op": "<",
             "value": 0, "horizon_s": 86400},
        ]
    for d in out:
        d["moment"] = d["id"]
    out[-1] = {"id": "combo", "kind": "combination", "members": ["s0_cnt", "s1_dc"],
               "window_s": 86400, "moment": "combo"}  # replaces the last forecast
    return out


def catalog() -> Catalog:
    attrs = {"x": {"type": "number"}, "code": {"type": "string"},
             "status": {"type": "string"}}
    return Catalog.from_wire({
        "signals": [{"type": t, "category": "behavior-device", "source": "iot",
                     "attributes": attrs} for t in TYPES],
        "detectors": detectors(), "actions": []})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--customers", type=int, default=2_000)
    args = parser.parse_args()
    heap.collect_rarely()  # as in a shard process
    cat = catalog()
    assert len(cat.detectors) == 50, len(cat.detectors)
    rng = random.Random(7)
    customers = {f"c{i}": CustomerState(f"c{i}") for i in range(args.customers)}
    ids = list(customers)
    events = []
    for n in range(args.events):
        t = T0 + n * 500  # 2 events/s overall; ~1 event per customer every ~17 min
        events.append(SignalRecord(f"e{n}", rng.choice(ids), rng.choice(TYPES), t, "bench",
                                   {"x": rng.gauss(50, 20), "code": f"E{rng.randrange(6)}",
                                    "status": rng.choice(("ok", "ok", "ok", "bad"))}))
    per_type = {t: len(cat.detectors_by_signal.get(t, ())) for t in TYPES}
    evaluations = sum(per_type[e.type] for e in events)
    wheel = TimerWheel()
    moments = 0
    next_tick = T0
    start = time.perf_counter()
    for e in events:
        customer = customers[e.customer_id]
        moments += len(customer.apply(e, cat) or ())
        wheel.schedule(e.customer_id, customer.next_due_ms())
        if e.occurred_at_ms >= next_tick:
            for cid in wheel.pop_due(e.occurred_at_ms):
                moments += len(customers[cid].on_time(e.occurred_at_ms, cat))
                wheel.schedule(cid, customers[cid].next_due_ms())
            next_tick += 60_000
    elapsed = time.perf_counter() - start
    packed = [c.pack_snapshot() for c in customers.values()]
    sizes = [len(p) for p in packed]
    tracemalloc.start()
    activated = [CustomerState.from_packed(p) for p in packed]
    resident = tracemalloc.get_traced_memory()[0] / len(activated)
    tracemalloc.stop()
    print(f"catalog: {len(cat.detectors)} detectors, "
          f"{evaluations / len(events):.1f} detector evaluations per event")
    print(f"events: {len(events):,} over {len(customers):,} customers, "
          f"{moments:,} moments, {len(wheel):,} customers with a timer")
    print(f"cost per event: {elapsed / len(events) * 1e6:.1f} µs "
          f"({elapsed / evaluations * 1e6:.2f} µs per detector evaluation, "
          f"{len(events) / elapsed:,.0f} events/s on one core)")
    print(f"state per customer (msgpack snapshot): mean {statistics.mean(sizes):,.0f} B, "
          f"max {max(sizes):,} B; in memory once activated: {resident:,.0f} B")


if __name__ == "__main__":
    main()
