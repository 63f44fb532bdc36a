"""One customer's state, processed one message at a time (a virtual actor's body).

The shard hosts many of these; everything here is plain data so that a customer snapshots to
msgpack and comes back identical. State is bounded: a fixed number of recent event ids, the last
attributes per signal type, live moments only, and recent decisions.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from .catalog import Catalog
from .models import Decision, Moment
from .signals import SignalRecord


class CustomerState:
    __slots__ = (
        "customer_id", "profile", "last", "detector_state", "moments", "treated",
        "_recent_ids", "_recent_set", "decisions", "last_event_ms",
    )

    def __init__(self, customer_id: str, *, dedup_ids: int = 64, decisions: int = 5) -> None:
        self.customer_id = customer_id
        self.profile: dict[str, Any] = {}
        self.last: dict[str, dict[str, Any]] = {}  # signal type -> latest attributes
        self.detector_state: dict[str, dict[str, Any]] = {}
        self.moments: list[Moment] = []
        self.treated: dict[str, int] = {}  # idempotency key -> expiry (ms)
        self._recent_ids: deque[str] = deque(maxlen=dedup_ids)
        self._recent_set: set[str] = set()
        self.decisions: deque[Decision] = deque(maxlen=decisions)
        self.last_event_ms = 0

    def seen(self, event_id: str) -> bool:
        return event_id in self._recent_set

    def _remember(self, event_id: str) -> None:
        if len(self._recent_ids) == self._recent_ids.maxlen:
            self._recent_set.discard(self._recent_ids[0])
        self._recent_ids.append(event_id)
        self._recent_set.add(event_id)

    def apply(self, signal: SignalRecord, catalog: Catalog) -> list[Moment] | None:
        """Take one signal in; return the new moments, or ``None`` for a duplicate."""
        if signal.event_id in self._recent_set:
            return None
        self._remember(signal.event_id)
        spec = catalog.signals[signal.type]
        if spec.updates_profile:
            self.profile.update(signal.attributes)
        previous = self.last.get(signal.type)
        if previous is None or previous.get("_at", 0) <= signal.occurred_at_ms:
            self.last[signal.type] = {**signal.attributes, "_at": signal.occurred_at_ms}
        self.last_event_ms = max(self.last_event_ms, signal.occurred_at_ms)
        fired: list[Moment] = []
        for detector in catalog.detectors_by_signal.get(signal.type, ()):
            state = self.detector_state.setdefault(detector.id, {"v": detector.version})
            if state.get("v") != detector.version:  # a new version starts afresh
                state.clear()
                state["v"] = detector.version
            moment = detector.detect(state, signal)
            if moment is not None:
                fired.append(moment)
        if fired:
            self.moments.extend(fired)
        return fired

    def live_moments(self, now_ms: int) -> list[Moment]:
        """Moments still within their useful life; expired ones are forgotten."""
        live = [m for m in self.moments if m.relevance(now_ms) > 0.0]
        if len(live) != len(self.moments):
            self.moments = live
            self.treated = {k: exp for k, exp in self.treated.items() if exp > now_ms}
        return live

    def mark_treated(self, idempotency_key: str, expires_ms: int) -> bool:
        """Record a treatment key; ``False`` if it was already treated."""
        if idempotency_key in self.treated:
            return False
        self.treated[idempotency_key] = expires_ms
        return True

    def namespace(self, now_ms: int) -> dict[str, Any]:
        """What policy expressions see."""
        return {
            "customer_id": self.customer_id,
            "profile": self.profile,
            "state": self.last,
            "moments": {m.name for m in self.live_moments(now_ms)},
            "now_ms": now_ms,
        }
