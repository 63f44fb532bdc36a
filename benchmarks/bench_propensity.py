"""Adaptive propensity in simulation, and arbitration throughput. Pure core, no Ray.

    python benchmarks/bench_propensity.py [--rounds 400] [--customers 5000] [--batch 250]

1. Simulation: synthetic customers in segments; each action has a true acceptance rate per
   segment, hidden from the engine. Each round a batch of customers is decided (the eligible
   actions, P from the model by Thompson sampling per segment, arbitrated by
   ``engine.arbitration.arbitrate`` with C = V = L = 1), the outcome is drawn from the truth,
   and the model learns through an ``OutcomeTracker`` (accepted closes a treatment at once;
   silence becomes ``ignored`` when the action's response timeout passes). A random policy over
   the same eligible sets is the baseline; the oracle picks the truly best eligible action.
2. Throughput: candidate sets scored per second by ``arbitrate``, with P per action (pooled
   Thompson draw) and with P per candidate bin (``PropensityModel.estimate`` + grouping).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np

from shush.engine.arbitration import ActionTable, CandidateSet, arbitrate
from shush.engine.models import Action
from shush.engine.outcomes import OutcomeTracker
from shush.engine.propensity import PropensityModel

HOUR_MS = 3_600_000
SEGMENTS = ("young", "family", "retired")


@dataclass
class Cell:
    action_id: str
    segment: str
    true_rate: float
    learned: float
    observations: int


@dataclass
class SimResult:
    adaptive_rate: float
    random_rate: float
    oracle_rate: float
    decisions: int
    cells: list[Cell]

    def weighted_error(self) -> float:
        """Mean |learned - true| weighted by the observations behind each cell."""
        n = sum(c.observations for c in self.cells)
        return sum(abs(c.learned - c.true_rate) * c.observations for c in self.cells) / n


def make_world(n_actions: int, seed: int) -> tuple[dict[str, Action], np.ndarray]:
    """Actions (all starting at the 0.5 prior) and their hidden true rates per segment."""
    rng = np.random.default_rng(seed)
    actions = {f"offer_{i}": Action(id=f"offer_{i}", kind="marketing", channel="email",
                                    value=1.0) for i in range(n_actions)}
    truth = rng.uniform(0.02, 0.35, size=(n_actions, len(SEGMENTS)))
    return actions, truth


def simulate(rounds: int = 400, customers: int = 5000, batch: int = 250, n_actions: int = 6,
             seed: int = 7) -> SimResult:
    actions, truth = make_world(n_actions, seed)
    table = ActionTable(actions)
    # one feature, 'segment': 3 categories + 'missing' (bin 0), used by every action
    model = PropensityModel(table.ids, actions, prior_strength=2.0, seed=seed,
                            feature_cardinalities=(len(SEGMENTS) + 1,),
                            action_features={a: [0] for a in table.ids})
    tracker = OutcomeTracker()
    rng = np.random.default_rng(seed + 1)
    segment = rng.integers(0, len(SEGMENTS), size=customers)
    eligible = rng.random((customers, n_actions)) < 0.6
    eligible[np.arange(customers), rng.integers(0, n_actions, customers)] = True
    accepted = {"adaptive": 0, "random": 0, "oracle": 0}
    decisions = 0
    now = 0
    for round_no in range(rounds):
        now += HOUR_MS
        for r in tracker.expire(now):  # silence past the response timeout: ignored
            model.record(r.action_id, r.positive, r.feature_bin)
        chosen = rng.choice(customers, size=batch, replace=False)
        by_segment: dict[int, list[int]] = {}
        for c in chosen.tolist():
            by_segment.setdefault(int(segment[c]), []).append(c)
        for seg, members in by_segment.items():
            sets = [CandidateSet(f"c{c}", tuple(table.ids[a] for a in np.flatnonzero(eligible[c])),
                                 (1.0,) * int(eligible[c].sum()),
                                 (None,) * int(eligible[c].sum())) for c in members]
            p = model.table([seg + 1], sample=True)
            for c, verdict in zip(members, arbitrate(sets, table, p), strict=True):
                assert verdict.winner is not None
                a = table.index[verdict.winner]
                decisions += 1
                tid = f"t{round_no}-{c}"
                tracker.track(tid, f"c{c}", verdict.winner, now, timeout_s=2 * 3600,
                              feature_bin=seg + 1)
                if rng.random() < truth[a, seg]:
                    accepted["adaptive"] += 1
                    r = tracker.observe(tid, "accepted", now + 60_000)
                    assert r is not None
                    model.record(r.action_id, r.positive, r.feature_bin)
                options = np.flatnonzero(eligible[c])
                accepted["random"] += rng.random() < truth[rng.choice(options), seg]
                accepted["oracle"] += rng.random() < truth[options, seg].max()
    cells = []
    for i, a in enumerate(table.ids):
        for s, name in enumerate(SEGMENTS):
            n = int(model.pos[i, s + 1] + model.neg[i, s + 1])
            learned = float(model.estimate(np.array([i]), np.array([s + 1]))[0])
            cells.append(Cell(a, name, float(truth[i, s]), learned, n))
    return SimResult(accepted["adaptive"] / decisions, accepted["random"] / decisions,
                     accepted["oracle"] / decisions, decisions, cells)


def throughput(n_sets: int = 20_000, n_actions: int = 20, batch: int = 1000,
               seed: int = 3) -> tuple[float, float]:
    """(sets/s with P per action, sets/s with P per candidate bin via grouping)."""
    rng = np.random.default_rng(seed)
    actions = {f"a{i:02d}": Action(id=f"a{i:02d}", kind="marketing", channel="email",
                                   value=float(rng.uniform(10, 100))) for i in range(n_actions)}
    table = ActionTable(actions)
    model = PropensityModel(table.ids, actions, seed=seed, feature_cardinalities=(4,),
                            action_features={a: [0] for a in table.ids})
    sets, rows = [], []
    for k in range(n_sets):
        ids = tuple(sorted(rng.choice(table.ids, size=int(rng.integers(2, 7)), replace=False)))
        sets.append(CandidateSet(f"c{k}", ids, tuple(rng.uniform(0.1, 1, len(ids)).tolist()),
                                 (None,) * len(ids)))
        rows.append(int(rng.integers(0, 4)))
    started = time.perf_counter()
    for i in range(0, n_sets, batch):
        arbitrate(sets[i:i + batch], table, model.sample())
    pooled = n_sets / (time.perf_counter() - started)
    started = time.perf_counter()
    for i in range(0, n_sets, batch):
        groups: dict[int, list[CandidateSet]] = {}
        for cset, row in zip(sets[i:i + batch], rows[i:i + batch], strict=True):
            groups.setdefault(row, []).append(cset)
        for row, members in groups.items():
            arbitrate(members, table, model.table([row], sample=True))
    binned = n_sets / (time.perf_counter() - started)
    return pooled, binned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=400)
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    started = time.perf_counter()
    result = simulate(args.rounds, args.customers, args.batch, seed=args.seed)
    took = time.perf_counter() - started
    print(f"simulation: {result.decisions} decisions in {took:.1f} s")
    print(f"{'action':<10} {'segment':<8} {'true':>6} {'learned':>8} {'n':>7}")
    for c in result.cells:
        print(f"{c.action_id:<10} {c.segment:<8} {c.true_rate:6.3f} {c.learned:8.3f} "
              f"{c.observations:7d}")
    print(f"evidence-weighted |learned - true|: {result.weighted_error():.4f}")
    print(f"accepted-offer rate: adaptive {result.adaptive_rate:.3f}, random "
          f"{result.random_rate:.3f}, oracle {result.oracle_rate:.3f} "
          f"(adaptive/random = {result.adaptive_rate / result.random_rate:.2f}x)")
    pooled, binned = throughput()
    print(f"arbitration: {pooled:,.0f} candidate sets/s (P per action), "
          f"{binned:,.0f} sets/s (P per feature bin, grouped), 2-6 candidates each")


if __name__ == "__main__":
    main()
