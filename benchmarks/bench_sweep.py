"""Sweep and emergency-run selection over one shard's HotColumns of 1 M customers.

    python benchmarks/bench_sweep.py [--customers 1000000] [--chunk 20000] [--seed 1]

Builds synthetic columns (4 signal kinds, 2 numeric fields, zip/region/segment/country codes,
products held), then prints memory per customer, the time of one full sweep of 3 criteria
(customers checked per second, due found), the same sweep walked in chunks as a shard does,
a second sweep (nothing new is due: episodes fire once), the selection of 25 zip codes for an
emergency run, the O(1) per-customer update, and the snapshot size and round trip.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from shush.engine.customer import CustomerState
from shush.engine.hot_columns import HotColumns, HotColumnsSpec
from shush.engine.runs import PopulationFilter
from shush.engine.sweep import Sweep, SweepCriterion, SweepCursor

DAY_MS = 86_400_000
NOW_MS = 1_750_000_000_000
SPEC = HotColumnsSpec.model_validate({
    "signals": ["deposit", "savings_withdrawal", "card_declined", "login"],
    "numeric": [{"name": "balance", "signal": "balance_update", "attribute": "balance"},
                {"name": "churn_score"}],
    "categorical": [{"name": "zip", "normalize": "zip5"}, {"name": "region"},
                    {"name": "segment"}, {"name": "country", "normalize": "upper"}],
    "sets": [{"name": "products"}],
})
CRITERIA = [SweepCriterion.model_validate(c) for c in (
    {"name": "no_deposit_30d", "moment": "no_recent_deposit",
     "when": {"absent": {"signal": "deposit", "for_s": 30 * 86_400}}},
    {"name": "churn_no_contact", "moment": "churn_risk",
     "when": {"all": [{"field": "churn_score", "op": ">", "value": 0.8},
                      {"no_contact_for_s": 14 * 86_400}]}},
    {"name": "low_balance_mass", "moment": "low_balance_check",
     "when": {"all": [{"field": "balance", "op": "<", "value": 100},
                      {"field": "segment", "in": ["mass", "student"]},
                      {"not": {"field": "products", "has_any": ["overdraft"]}}]}},
)]
PRODUCTS = ["card", "savings", "mortgage", "loan", "overdraft", "brokerage"]


def build(n: int, rng: np.random.Generator) -> tuple[HotColumns, list[str]]:
    cols = HotColumns(SPEC, capacity=n)
    rows = cols.add_many(f"cust-{i:08d}" for i in range(n))
    for signal in SPEC.signals:
        age_days = rng.integers(0, 60, n)
        seen = NOW_MS - age_days * DAY_MS - rng.integers(0, DAY_MS, n)
        seen[rng.random(n) < 0.05] = np.iinfo(np.int64).min  # never seen
        cols.last_seen(signal)[:] = seen
    cols.first_seen[:] = NOW_MS - 400 * DAY_MS
    cols.numeric("balance")[:] = rng.gamma(2.0, 800.0, n)
    score = rng.random(n)
    score[rng.random(n) < 0.1] = np.nan  # unknown
    cols.numeric("churn_score")[:] = score
    contacted = rng.random(n) < 0.6
    cols.last_contact[contacted] = NOW_MS - rng.integers(0, 30, contacted.sum()) * DAY_MS
    zips = [f"{z:05d}" for z in rng.choice(np.arange(1000, 99999), 30_000, replace=False)]
    cols.set_codes("zip", rows, (zips[i] for i in rng.integers(0, len(zips), n)))
    regions = [f"R{r:02d}" for r in range(50)]
    cols.set_codes("region", rows, (regions[i] for i in rng.integers(0, 50, n)))
    segments = ["mass", "affluent", "student", "business"]
    cols.set_codes("segment", rows, (segments[i] for i in rng.integers(0, 4, n)))
    cols.set_codes("country", rows, ["US"] * n)
    held = rng.random((n, len(PRODUCTS))) < 0.3
    cols.set_items("products", rows, ([p for p, h in zip(PRODUCTS, mask, strict=True) if h]
                                      for mask in held))
    return cols, zips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    n, rng = args.customers, np.random.default_rng(args.seed)

    started = time.perf_counter()
    cols, zips = build(n, rng)
    print(f"built {n:,} customers in {time.perf_counter() - started:.1f} s (synthetic, bulk)")
    index = cols.index_bytes()
    print(f"memory: columns {cols.column_bytes_per_customer()} B/customer "
          f"(arrays {cols.nbytes() / 1e6:.0f} MB); id index {index / n:.0f} B/customer "
          f"(Python dict + ids); total {(cols.nbytes() + index) / n:.0f} B/customer")

    sweep = Sweep(CRITERIA, SPEC)
    started = time.perf_counter()
    found = sweep.check(cols, NOW_MS)
    took = time.perf_counter() - started
    due = np.unique(np.concatenate([d.rows for d in found]))
    per = ", ".join(f"{d.criterion.name} {len(d.rows):,}" for d in found)
    print(f"full sweep, 3 criteria: {took * 1000:.0f} ms ({n / took / 1e6:.1f} M customers "
          f"checked/s); due {len(due):,} customers ({per})")
    started = time.perf_counter()
    moments = sum(len(d.moments(cols, NOW_MS)) for d in found)
    print(f"  moments for the due customers: {moments:,} in "
          f"{(time.perf_counter() - started) * 1000:.0f} ms")

    started = time.perf_counter()
    again = sum(len(d.rows) for d in sweep.check(cols, NOW_MS + 60_000))
    print(f"second sweep a minute later: {(time.perf_counter() - started) * 1000:.0f} ms, "
          f"due {again:,} (episodes fire once)")

    fresh, cursor = Sweep(CRITERIA, SPEC), SweepCursor(args.chunk)
    started = time.perf_counter()
    chunks = 0
    while cursor.progress.cycles == 0:
        cursor.step(fresh, cols, NOW_MS)
        chunks += 1
    took = time.perf_counter() - started
    print(f"chunked sweep ({chunks} chunks of {args.chunk:,}): {took * 1000:.0f} ms, "
          f"{took / chunks * 1000:.2f} ms per chunk, due {cursor.progress.due_found:,}")

    chosen = tuple(zips[:25])
    started = time.perf_counter()
    selected = PopulationFilter(zips=chosen).select(cols)
    took = time.perf_counter() - started
    print(f"emergency run, 25 zip codes: selected {len(selected):,} customers in "
          f"{took * 1000:.1f} ms ({n / took / 1e6:.0f} M customers scanned/s)")
    started = time.perf_counter()
    ids = cols.ids(selected)
    print(f"  their ids: {len(ids):,} in {(time.perf_counter() - started) * 1000:.1f} ms")

    states = []
    for i in range(100_000):
        state = CustomerState(f"cust-{i:08d}")
        state.last = {"deposit": {"amount": 1.0, "_at": NOW_MS}, "login": {"_at": NOW_MS}}
        state.profile = {"zip": "02134", "segment": "mass", "country": "us",
                         "churn_score": 0.5, "products": ["card"]}
        states.append(state)
    started = time.perf_counter()
    for state in states:
        cols.update(state, last_contact_ms=NOW_MS)
    took = time.perf_counter() - started
    print(f"update(customer): {took / len(states) * 1e6:.1f} us each")

    started = time.perf_counter()
    blob = cols.to_bytes()
    dumped = time.perf_counter() - started
    started = time.perf_counter()
    HotColumns.from_bytes(blob)
    print(f"snapshot: {len(blob) / 1e6:.0f} MB, to_bytes {dumped:.2f} s, "
          f"from_bytes {time.perf_counter() - started:.2f} s")


if __name__ == "__main__":
    main()
