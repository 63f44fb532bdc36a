"""Holdout (control) groups and the lift report.

Membership is sticky: a customer is in the holdout of an action for a whole validity period,
decided by a stable hash — blake2b of ``customer_id|action_id|period_index`` — never by
Python's ``hash`` or a random draw, so every shard and every restart agrees. Periods are aligned
on the Unix epoch (period ``k`` covers ``[k·validity, (k+1)·validity)``); at a period boundary
about ``pct`` % of customers are drawn afresh.

A held-out customer gets no treatment for that action, but a holdout record is tracked like a
treatment (``OutcomeTracker.track(..., holdout=True)``), so that its outcomes (the customer did
the thing anyway) give the baseline rate the lift is measured against.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from .outcomes import Resolution

__all__ = ["ActionLift", "format_lift_report", "holdout_bucket", "in_holdout", "lift_report",
           "period_index"]

_SCALE = float(1 << 64)


def period_index(now_ms: int, validity_s: float) -> int:
    if validity_s <= 0:
        raise ValueError(f"a holdout validity period must be > 0 s, got {validity_s}")
    return int(now_ms // int(validity_s * 1000))


def holdout_bucket(customer_id: str, action_id: str, period: int) -> float:
    """A stable, uniform number in [0, 100) for this customer, action and period."""
    digest = hashlib.blake2b(f"{customer_id}|{action_id}|{period}".encode(),
                             digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE * 100.0


def in_holdout(customer_id: str, action_id: str, pct: float, validity_s: float,
               now_ms: int) -> bool:
    """True if the customer is in the action's control group at ``now_ms``."""
    if pct <= 0:
        return False
    return holdout_bucket(customer_id, action_id, period_index(now_ms, validity_s)) < pct


@dataclass(slots=True)
class ActionLift:
    action_id: str
    treated: int = 0
    treated_positive: int = 0
    holdout: int = 0
    holdout_positive: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)  # kind -> treated count seen

    @property
    def treated_rate(self) -> float | None:
        return self.treated_positive / self.treated if self.treated else None

    @property
    def holdout_rate(self) -> float | None:
        return self.holdout_positive / self.holdout if self.holdout else None

    @property
    def lift(self) -> float | None:
        """Absolute lift: treated rate minus holdout rate (None without both groups)."""
        t, h = self.treated_rate, self.holdout_rate
        return None if t is None or h is None else t - h

    @property
    def relative_lift(self) -> float | None:
        """Treated rate / holdout rate - 1 (None when the holdout rate is 0 or unknown)."""
        t, h = self.treated_rate, self.holdout_rate
        return None if t is None or not h else t / h - 1.0


def lift_report(resolutions: Iterable[Resolution]) -> list[ActionLift]:
    """Treatments, outcomes and rates per action, treated vs holdout; sorted by action id."""
    rows: dict[str, ActionLift] = {}
    for r in resolutions:
        row = rows.get(r.action_id)
        if row is None:
            row = rows[r.action_id] = ActionLift(r.action_id)
        if r.holdout:
            row.holdout += 1
            row.holdout_positive += r.positive
            continue
        row.treated += 1
        row.treated_positive += r.positive
        for kind in r.seen:
            row.outcomes[kind] = row.outcomes.get(kind, 0) + 1
    return [rows[a] for a in sorted(rows)]


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.1f}%"


def format_lift_report(rows: Iterable[ActionLift]) -> str:
    """A plain-text table for ``shush report``."""
    lines = [f"{'action':<28} {'treated':>8} {'rate':>7} {'holdout':>8} {'rate':>7} "
             f"{'lift':>7} {'rel.':>7}  outcomes"]
    for row in rows:
        outcomes = ", ".join(f"{k} {n}" for k, n in sorted(row.outcomes.items()))
        lines.append(f"{row.action_id:<28} {row.treated:>8} {_pct(row.treated_rate):>7} "
                     f"{row.holdout:>8} {_pct(row.holdout_rate):>7} {_pct(row.lift):>7} "
                     f"{_pct(row.relative_lift):>7}  {outcomes}")
    return "\n".join(lines)
