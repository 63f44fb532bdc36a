"""The load test's workload: its parameters, the open-loop schedule, the synthetic population
and the events it sends (pure: no Ray, no network)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

TRIGGER_AMOUNT = 7_000.0  # >= 5,000: the bank catalog's large_withdrawal fires
TRIGGER_MOMENT = "large_withdrawal"
SEGMENTS = ("mass", "affluent", "student", "business")
SEGMENT_WEIGHTS = (0.6, 0.2, 0.1, 0.1)
PERCENTILES = (("p50", 50.0), ("p95", 95.0), ("p99", 99.0), ("p99_9", 99.9))
RAY_DAEMONS = frozenset({"raylet", "gcs_server"})


# -- what to run -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class LoadSpec:
    target: str
    channel_path: Path
    rate_eps: float
    duration_s: float = 30.0
    batch_size: int = 250
    senders: int = 8
    processes: int = 1
    customers: int = 20_000
    trigger_fraction: float = 0.02
    decide_rate_hz: float = 20.0
    drain_s: float = 10.0
    timeout_s: float = 30.0
    seed: int = 7
    frames_target: str | None = None  # submits and Decides over the frames edge, not gRPC
    direct_to_shards: bool = True  # over frames, straight to their shards (Routes)

    def trigger_customers(self) -> int:
        """Customers kept apart for triggers: enough for the run, one trigger each."""
        return needed_trigger_customers(self) + self.processes

    def population_size(self) -> int:
        """``customers`` for the background events, plus the trigger customers."""
        return self.customers + self.trigger_customers()


def needed_trigger_customers(spec: LoadSpec) -> int:
    return math.ceil(spec.rate_eps * spec.duration_s * spec.trigger_fraction * 1.2) + 1


def process_rate(rate_eps: float, processes: int) -> float:
    return rate_eps / processes


def slot_offsets_s(rate_eps: float, batch_size: int, duration_s: float,
                   phase: float = 0.0) -> np.ndarray:
    """Send times (seconds from the start) of each batch of one process, open loop.

    ``phase`` in [0, 1) shifts the schedule by that share of one interval, so that several
    processes interleave instead of sending together.
    """
    if rate_eps <= 0 or batch_size <= 0:
        raise ValueError("rate and batch size must be positive")
    interval_s = batch_size / rate_eps
    offsets = np.arange(phase * interval_s, duration_s, interval_s)
    return offsets[offsets < duration_s]


def sender_slots(num_slots: int, sender: int, senders: int) -> range:
    """The batches sender ``sender`` of ``senders`` owns: every ``senders``-th."""
    return range(sender, num_slots, senders)


# -- the synthetic population and its events ----------------------------------------------

class Population:
    """N customers with a profile each, drawn with numpy; ids carry the run's tag."""

    def __init__(self, size: int, *, tag: str, seed: int = 7) -> None:
        rng = np.random.default_rng(seed)
        self.tag = tag
        self.ids = [f"{tag}-{i}" for i in range(size)]
        self.segments = rng.choice(len(SEGMENTS), size, p=SEGMENT_WEIGHTS)
        self.ages = rng.integers(18, 90, size)
        self.zips = rng.integers(1_000, 99_999, size)

    def __len__(self) -> int:
        return len(self.ids)

    def profile_batches(self, batch_size: int, at_ms: int) -> Iterator[list[list[Any]]]:
        """Profile events of every customer, as wire events (``SubmitPacked``)."""
        for start in range(0, len(self.ids), batch_size):
            yield [[f"{self.tag}-p{i}", self.ids[i], "profile_update", at_ms, "loadtest",
                    {"segment": str(SEGMENTS[self.segments[i]]), "age": int(self.ages[i]),
                     "zip": f"{self.zips[i]:05d}", "country": "NL"}]
                   for i in range(start, min(start + batch_size, len(self.ids)))]


class EventFactory:
    """Batches of one client process: balance updates, small withdrawals and triggers.

    The first ``trigger_rows`` customers are kept for triggers, the rest get the background
    events: a trigger customer gets nothing but its profile and one large withdrawal, so its
    one treatment is that withdrawal's (no other moment of its own competes, and the
    detector's cooldown never swallows a second trigger). Process ``p`` of ``P`` takes trigger
    rows ``p, p + P, p + 2P, ...`` in turn. When its pool runs out, would-be triggers become
    small withdrawals (counted).
    """

    def __init__(self, population: Population, process: int, processes: int,
                 trigger_fraction: float, seed: int, trigger_rows: int | None = None) -> None:
        self.population = population
        self.process = process
        self.trigger_fraction = trigger_fraction
        self.seed = seed
        rows = len(population) if trigger_rows is None else trigger_rows
        self._triggers = iter(range(process, rows, processes))
        self._background = (rows, len(population)) if rows < len(population) else \
            (0, len(population))
        self.pool_exhausted = 0

    def _next_trigger(self) -> int | None:
        return next(self._triggers, None)

    def make_batch(self, k: int, size: int, at_ms: int) -> tuple[list[list[Any]],
                                                                   list[tuple[str, int]]]:
        """Batch ``k``; returns the wire events and the (customer, scheduled ms) of its
        triggers."""
        rng = np.random.default_rng([self.seed, self.process, k])
        # as Python numbers up front: indexing numpy arrays event by event, and building
        # each event through a call, were half of a load generator's CPU at saturation
        kinds = rng.random(size).tolist()
        rows = rng.integers(*self._background, size).tolist()
        values = rng.uniform(200.0, 3_000.0, size).tolist()  # balances stay above the reset
        ids = self.population.ids
        prefix = f"{self.population.tag}-{self.process}-{k}-"
        trigger_fraction = self.trigger_fraction
        events: list[list[Any]] = []
        triggers: list[tuple[str, int]] = []
        for i, kind in enumerate(kinds):
            if kind < trigger_fraction:
                trigger_row = self._next_trigger()
                if trigger_row is not None:
                    customer = ids[trigger_row]
                    triggers.append((customer, at_ms))
                    events.append([prefix + str(i), customer, "savings_withdrawal", at_ms,
                                   "loadtest", {"amount": TRIGGER_AMOUNT}])
                    continue
                self.pool_exhausted += 1
                kind = 1.0
            if kind < 0.6:
                events.append([prefix + str(i), ids[rows[i]], "balance_update", at_ms,
                               "loadtest", {"balance": values[i]}])
            else:
                events.append([prefix + str(i), ids[rows[i]], "savings_withdrawal", at_ms,
                               "loadtest", {"amount": 50.0 if kind < 0.8 else 200.0}])
        return events, triggers
