"""Volume budgets: at most N fires of an action per day, cluster-wide, spent only on a fire.

The arbitration actor holds one ``BudgetBook`` (with several arbitrators, each owns the budgets
of the actions that hash to it, or the limit is split between them). Semantics:

- ``reserve(action_id, token, now_ms)`` when an action wins: it holds one unit of today's budget
  (days start at local midnight of the configured time zone). Refused (False) when
  committed + reserved would exceed the limit, so a losing candidate can win instead.
- ``commit(token, now_ms)`` when the treatment actually fires: the unit is spent, in the day it
  was reserved. Idempotent per token.
- ``release(token)`` when it does not fire (held out, consent changed, send failed): the unit
  goes back. Reservations older than ``reservation_ttl_s`` are released by ``expire`` (a shard
  that died between reserve and commit must not hold budget forever); a deferred send (quiet
  hours) needs a TTL longer than the longest deferral.
- Days roll over by themselves: a new local day has fresh counters; past days are dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ..engine.arbitration import Verdict
from ..engine.models import Removal
from .candidates import idempotency_key
from .local_time import local_datetime, zone

__all__ = ["BudgetBook", "Reservation", "apply_budgets"]

SNAPSHOT_VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class Reservation:
    action_id: str
    day: str  # local ISO date the unit belongs to
    reserved_ms: int


class BudgetBook:
    name = "budget"

    def __init__(self, limits: Mapping[str, int], timezone: str = "UTC", *,
                 reservation_ttl_s: float = 86_400.0) -> None:
        if any(v < 0 for v in limits.values()):
            raise ValueError("a budget per day must be >= 0")
        self.limits = dict(limits)
        self.timezone = timezone
        self._tz = zone(timezone)
        self.reservation_ttl_ms = int(reservation_ttl_s * 1000)
        self.committed: dict[str, dict[str, int]] = {}  # day -> action -> fires
        self.reserved: dict[str, Reservation] = {}  # token -> reservation
        self._committed_tokens: dict[str, str] = {}  # token -> day (idempotent commits)
        self._held: dict[tuple[str, str], int] = {}  # (action, day) -> reserved units

    def day_of(self, now_ms: int) -> str:
        return local_datetime(now_ms, self._tz).date().isoformat()

    def _roll(self, today: str) -> None:
        for day in [d for d in self.committed if d < today]:
            del self.committed[day]
        for token in [t for t, d in self._committed_tokens.items() if d < today]:
            del self._committed_tokens[token]

    def _reserved_count(self, action_id: str, day: str) -> int:
        return self._held.get((action_id, day), 0)

    def _hold(self, token: str, reservation: Reservation) -> None:
        self.reserved[token] = reservation
        key = (reservation.action_id, reservation.day)
        self._held[key] = self._held.get(key, 0) + 1

    def _unhold(self, token: str) -> Reservation | None:
        reservation = self.reserved.pop(token, None)
        if reservation is not None:
            key = (reservation.action_id, reservation.day)
            if self._held[key] <= 1:
                del self._held[key]
            else:
                self._held[key] -= 1
        return reservation

    def remaining(self, action_id: str, now_ms: int) -> int | None:
        """Units left today (None: no budget for this action)."""
        limit = self.limits.get(action_id)
        if limit is None:
            return None
        day = self.day_of(now_ms)
        used = self.committed.get(day, {}).get(action_id, 0)
        return max(0, limit - used - self._reserved_count(action_id, day))

    def reserve(self, action_id: str, token: str, now_ms: int) -> bool:
        """Hold one unit for ``token`` (True), or refuse (False). No budget: always True."""
        if action_id not in self.limits:
            return True
        if token in self.reserved or token in self._committed_tokens:
            return True
        self._roll(self.day_of(now_ms))
        self.expire(now_ms)
        remaining = self.remaining(action_id, now_ms)
        if remaining is not None and remaining <= 0:
            return False
        self._hold(token, Reservation(action_id, self.day_of(now_ms), now_ms))
        return True

    def commit(self, token: str, now_ms: int) -> bool:
        """Spend the unit held by ``token``; False if there is none (unbudgeted, expired,
        or already committed)."""
        reservation = self._unhold(token)
        if reservation is None:
            return False
        self._roll(self.day_of(now_ms))
        if reservation.day >= self.day_of(now_ms):
            day = self.committed.setdefault(reservation.day, {})
            day[reservation.action_id] = day.get(reservation.action_id, 0) + 1
            self._committed_tokens[token] = reservation.day
        return True

    def release(self, token: str) -> bool:
        return self._unhold(token) is not None

    def expire(self, now_ms: int) -> list[str]:
        """Release reservations older than the TTL; return their tokens."""
        stale = [t for t, r in self.reserved.items()
                 if now_ms - r.reserved_ms >= self.reservation_ttl_ms]
        for token in stale:
            self._unhold(token)
        return stale

    def spent(self, action_id: str, now_ms: int) -> int:
        return self.committed.get(self.day_of(now_ms), {}).get(action_id, 0)

    # -- snapshots ------------------------------------------------------------------------
    def to_snapshot(self) -> dict[str, Any]:
        return {"v": SNAPSHOT_VERSION, "timezone": self.timezone,
                "committed": {d: dict(a) for d, a in self.committed.items()},
                "reserved": {t: [r.action_id, r.day, r.reserved_ms]
                             for t, r in self.reserved.items()},
                "committed_tokens": dict(self._committed_tokens)}

    def load_snapshot(self, data: Mapping[str, Any]) -> None:
        """Restore counters (limits come from the current catalog, not the snapshot)."""
        if data.get("v") != SNAPSHOT_VERSION:
            raise ValueError(f"budget snapshot version {data.get('v')!r}, "
                             f"expected {SNAPSHOT_VERSION}")
        self.committed = {str(d): {str(a): int(n) for a, n in acts.items()}
                          for d, acts in data["committed"].items()}
        self.reserved, self._held = {}, {}
        for token, (action_id, day, ms) in data["reserved"].items():
            self._hold(str(token), Reservation(str(action_id), str(day), int(ms)))
        self._committed_tokens = {str(t): str(d) for t, d in data["committed_tokens"].items()}


def apply_budgets(verdicts: Sequence[Verdict], book: BudgetBook,
                  now_ms: int) -> tuple[list[Verdict], dict[str, list[Removal]]]:
    """Reserve budget for each main winner; a winner whose budget is spent is removed and the
    next candidate with a positive score wins instead (per-channel winners, ``also``, are not
    budgeted). The reservation token is the treatment's
    idempotency key (``customer|action|moment``): commit or release it by that key."""
    out: list[Verdict] = []
    removals: dict[str, list[Removal]] = {}
    for verdict in verdicts:
        if verdict.winner is None:
            out.append(verdict)
            continue
        dropped: list[Removal] = []
        winner = None
        for cand in verdict.candidates:
            if cand.score <= 0:
                break
            token = idempotency_key(verdict.customer_id, cand.action_id, cand.moment_id)
            if book.reserve(cand.action_id, token, now_ms):
                winner = cand.action_id
                break
            limit = book.limits[cand.action_id]
            dropped.append(Removal(action_id=cand.action_id, policy=book.name,
                                   reason=f"daily budget of {limit} spent "
                                          f"({book.spent(cand.action_id, now_ms)} fired today, "
                                          f"the rest held by pending sends)"))
        if dropped:
            gone = {r.action_id for r in dropped}
            verdict = Verdict(verdict.customer_id,
                              tuple(c for c in verdict.candidates if c.action_id not in gone),
                              winner, tuple(a for a in verdict.also
                                            if a != winner and a not in gone))
            removals[verdict.customer_id] = dropped
        out.append(verdict)
    return out, removals
