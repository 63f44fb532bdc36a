"""Two sets of ``shush loadtest`` reports compared: the code before a change and after.

Runs on the shared 2-core machine move by ±15-20 % from one to the next, as the machine's
speed moves, which hides the few per cent a change makes to the CPU per event. The load
generator's own CPU per event follows the machine's speed within each run, and its code
rarely changes, so each role's CPU per event is also read as a multiple of the generator's in
the same run (stop 45): a change shows there when raw figures drift. Both readings are
given, as means over the runs of each side, with the change from A to B in per cent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import mean
from typing import Any

GENERATOR = "load generator"
ENGINE = "engine"  # every role but the load generator


@dataclass(frozen=True, slots=True)
class Row:
    """One measure: its values in A's runs and in B's, in run order."""

    name: str
    a: tuple[float, ...]
    b: tuple[float, ...]

    @property
    def change_pct(self) -> float | None:
        """B's mean against A's, in per cent (``None`` when A's mean is 0)."""
        base = mean(self.a)
        return None if base == 0 else (mean(self.b) / base - 1) * 100


def measures(report: Mapping[str, Any]) -> dict[str, float]:
    """A report's figures to compare: accepted events/s, the p99 latencies it has, each role's
    CPU per event (µs), the engine's (every role but the load generator) and, when the
    generator's is known, each of them as a multiple of it."""
    cpu: Mapping[str, float] = report["resources"]["cpu_us_per_event"]
    roles = {role: float(us) for role, us in cpu.items() if role != "all"}
    roles[ENGINE] = sum(us for role, us in roles.items() if role != GENERATOR)
    out = {"accepted events/s": float(report["throughput"]["accepted_eps"])}
    latency = report.get("latency_ms", {})
    for name, key in (("p99 submit → treatment ms", "submit_to_treatment"),
                      ("Decide p99 ms", "decide")):
        p99 = latency.get(key, {}).get("p99")
        if p99 is not None:
            out[name] = float(p99)
    out.update({f"{role} µs/event": us for role, us in roles.items()})
    generator = roles.get(GENERATOR, 0.0)
    if generator > 0:
        out.update({f"{role} / {GENERATOR}": us / generator
                    for role, us in roles.items() if role != GENERATOR})
    return out


def compare(a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]]) -> list[Row]:
    """The measures both sides' reports all have, A's run order kept."""
    if not a or not b:
        raise ValueError(f"each side needs at least one report (A has {len(a)}, B {len(b)})")
    a_measures = [measures(r) for r in a]
    b_measures = [measures(r) for r in b]
    names = [n for n in a_measures[0]
             if all(n in m for m in a_measures) and all(n in m for m in b_measures)]
    return [Row(n, tuple(m[n] for m in a_measures), tuple(m[n] for m in b_measures))
            for n in names]


def format_rows(rows: Sequence[Row]) -> str:
    """A plain-text table: each side's runs and mean, and the change."""
    def figure(value: float) -> str:
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.2f}"

    width = max(len(r.name) for r in rows)
    lines = [f"{'measure':{width}}  {'A: runs':>30}  {'mean':>9}  {'B: runs':>30}  "
             f"{'mean':>9}  {'B vs A':>7}"]
    for r in rows:
        change = "-" if r.change_pct is None else f"{r.change_pct:+.1f}%"
        lines.append(f"{r.name:{width}}  {', '.join(map(figure, r.a)):>30}  "
                     f"{figure(mean(r.a)):>9}  {', '.join(map(figure, r.b)):>30}  "
                     f"{figure(mean(r.b)):>9}  {change:>7}")
    return "\n".join(lines)
