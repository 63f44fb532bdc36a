"""The fixed synthetic workload shared by the benchmarks: bank events for N customers."""

from __future__ import annotations

import numpy as np

T0_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def bank_events(num_events: int, num_customers: int, *, seed: int = 42,
                start_ms: int = T0_MS) -> list[list[object]]:
    """Wire events: 60% balance updates, 30% savings withdrawals, 10% declined cards."""
    rng = np.random.default_rng(seed)
    customers = rng.integers(0, num_customers, num_events)
    kinds = rng.random(num_events)
    balances = rng.uniform(20, 3000, num_events)
    amounts = rng.choice([50.0, 200.0, 7000.0], num_events)
    events: list[list[object]] = []
    for i in range(num_events):
        customer = f"c{customers[i]}"
        at = start_ms + i
        if kinds[i] < 0.6:
            events.append([f"b{i}", customer, "balance_update", at, "bench",
                           {"balance": float(balances[i])}])
        elif kinds[i] < 0.9:
            events.append([f"w{i}", customer, "savings_withdrawal", at, "bench",
                           {"amount": float(amounts[i])}])
        else:
            events.append([f"d{i}", customer, "card_declined", at, "bench", {"amount": 10.0}])
    return events
