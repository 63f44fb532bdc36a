"""Outcomes of treatments, and the treatments still waiting for one.

Outcome kinds are declared (``OutcomeKinds``): which close a treatment as a success (positive),
which as a failure (negative), and which are only noted (neutral: e.g. delivered, opened). A
treatment that gets no positive or negative outcome within its action's response timeout is
closed as ``ignored`` (negative). Each closed treatment is one ``Resolution``: what the
propensity model learns from (unless the treatment was a holdout), what the lift report counts,
and what the contact history records for outcome-based suppression.

``OutcomeTracker`` is pure and bounded: a dict of pending treatments plus a heap of deadlines
(lazy deletion). When full, the pending treatment with the earliest deadline is closed early as
ignored and returned by ``track``.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .records import record

IGNORED: Final = "ignored"
SNAPSHOT_VERSION: Final = 1

__all__ = ["IGNORED", "OutcomeKinds", "OutcomeTracker", "Pending", "Resolution"]


class OutcomeKinds(BaseModel):
    """Which outcome kinds are positive, negative or neutral."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    positive: tuple[str, ...] = Field(("accepted",), description="Close a treatment as success")
    negative: tuple[str, ...] = Field(("rejected",), description="Close a treatment as failure")
    neutral: tuple[str, ...] = Field(("delivered", "opened", "clicked"),
                                     description="Noted; the treatment keeps waiting")

    @model_validator(mode="after")
    def _disjoint(self) -> OutcomeKinds:
        seen: set[str] = set()
        for kind in (*self.positive, *self.negative, *self.neutral):
            if kind in seen or kind == IGNORED:
                raise ValueError(f"outcome kind {kind!r} declared twice (or reserved)")
            seen.add(kind)
        if not self.positive:
            raise ValueError("at least one outcome kind must be positive")
        return self

    def known(self) -> frozenset[str]:
        return frozenset((*self.positive, *self.negative, *self.neutral, IGNORED))


@record
class Resolution:
    """A treatment closed: by a positive/negative outcome, or by its timeout (``ignored``)."""

    treatment_id: str
    customer_id: str
    action_id: str
    feature_bin: int
    kind: str
    positive: bool
    at_ms: int
    holdout: bool
    seen: tuple[str, ...]  # every outcome kind noted, in order, including the closing one


@dataclass(slots=True)
class Pending:
    treatment_id: str
    customer_id: str
    action_id: str
    feature_bin: int
    sent_ms: int
    deadline_ms: int
    holdout: bool = False
    seen: list[str] = field(default_factory=list)

    def to_wire(self) -> list[Any]:
        return [self.treatment_id, self.customer_id, self.action_id, self.feature_bin,
                self.sent_ms, self.deadline_ms, self.holdout, list(self.seen)]


class OutcomeTracker:
    def __init__(self, kinds: OutcomeKinds | None = None, *, max_pending: int = 1_000_000) -> None:
        self.kinds = kinds or OutcomeKinds()
        self.max_pending = max_pending
        self.pending: dict[str, Pending] = {}
        self._deadlines: list[tuple[int, str]] = []
        self._positive = frozenset(self.kinds.positive)
        self._negative = frozenset(self.kinds.negative)
        self._known = self.kinds.known()

    def __len__(self) -> int:
        return len(self.pending)

    def track(self, treatment_id: str, customer_id: str, action_id: str, sent_ms: int,
              timeout_s: float, *, feature_bin: int = 0, holdout: bool = False,
              ) -> Resolution | None:
        """Wait for an outcome of this treatment until ``sent_ms + timeout_s``. Tracking the
        same id twice changes nothing. Returns the treatment closed early if the tracker was
        full."""
        if treatment_id in self.pending:
            return None
        evicted = None
        if len(self.pending) >= self.max_pending:
            evicted = self._evict()
        item = Pending(treatment_id, customer_id, action_id, feature_bin, sent_ms,
                       sent_ms + int(timeout_s * 1000), holdout)
        self.pending[treatment_id] = item
        heapq.heappush(self._deadlines, (item.deadline_ms, treatment_id))
        return evicted

    def observe(self, treatment_id: str, kind: str, at_ms: int) -> Resolution | None:
        """Note an outcome; return the resolution if it closes the treatment. An unknown or
        already-closed treatment returns None; an undeclared kind raises ``ValueError``."""
        if kind not in self._known or kind == IGNORED:
            raise ValueError(f"unknown outcome kind {kind!r}; declared: "
                             f"{', '.join(sorted(self._known - {IGNORED}))}")
        item = self.pending.get(treatment_id)
        if item is None:
            return None
        if kind not in item.seen:
            item.seen.append(kind)
        if kind in self._positive or kind in self._negative:
            del self.pending[treatment_id]
            return self._close(item, kind, kind in self._positive, at_ms)
        return None

    def next_due_ms(self) -> int | None:
        while self._deadlines:
            deadline, treatment_id = self._deadlines[0]
            item = self.pending.get(treatment_id)
            if item is not None and item.deadline_ms == deadline:
                return deadline
            heapq.heappop(self._deadlines)
        return None

    def expire(self, now_ms: int) -> list[Resolution]:
        """Close as ``ignored`` every treatment whose deadline is at or before ``now_ms``."""
        closed: list[Resolution] = []
        while (due := self.next_due_ms()) is not None and due <= now_ms:
            _, treatment_id = heapq.heappop(self._deadlines)
            item = self.pending.pop(treatment_id)
            closed.append(self._close(item, IGNORED, False, item.deadline_ms))
        return closed

    def _evict(self) -> Resolution:
        due = self.next_due_ms()
        assert due is not None  # the tracker is full, so something is pending
        _, treatment_id = heapq.heappop(self._deadlines)
        item = self.pending.pop(treatment_id)
        return self._close(item, IGNORED, False, item.deadline_ms)

    @staticmethod
    def _close(item: Pending, kind: str, positive: bool, at_ms: int) -> Resolution:
        seen = tuple(item.seen) if kind in item.seen else (*item.seen, kind)
        return Resolution(item.treatment_id, item.customer_id, item.action_id, item.feature_bin,
                          kind, positive, at_ms, item.holdout, seen)

    # -- snapshots ------------------------------------------------------------------------
    def to_snapshot(self) -> dict[str, Any]:
        return {"v": SNAPSHOT_VERSION, "max_pending": self.max_pending,
                "pending": [p.to_wire() for p in self.pending.values()]}

    @classmethod
    def from_snapshot(cls, data: dict[str, Any], kinds: OutcomeKinds | None = None,
                      ) -> OutcomeTracker:
        if data.get("v") != SNAPSHOT_VERSION:
            raise ValueError(f"outcome tracker snapshot version {data.get('v')!r}, "
                             f"expected {SNAPSHOT_VERSION}")
        tracker = cls(kinds, max_pending=int(data["max_pending"]))
        for row in data["pending"]:
            tid, cid, aid, fbin, sent, deadline, holdout, seen = row
            item = Pending(str(tid), str(cid), str(aid), int(fbin), int(sent), int(deadline),
                           bool(holdout), [str(k) for k in seen])
            tracker.pending[item.treatment_id] = item
            tracker._deadlines.append((item.deadline_ms, item.treatment_id))
        heapq.heapify(tracker._deadlines)
        return tracker
