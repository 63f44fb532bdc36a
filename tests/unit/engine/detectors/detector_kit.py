"""Builders for detector tests: a small catalog around given detectors, and a customer driver."""

from __future__ import annotations

import itertools
from typing import Any

from shush.engine.catalog import Catalog
from shush.engine.customer import CustomerState
from shush.engine.models import Moment
from shush.engine.signals import SignalRecord

T0 = 1_750_000_000_000  # 2025-06-15T15:06:40Z
SECOND, MINUTE, HOUR, DAY = 1000, 60_000, 3_600_000, 86_400_000

SIGNALS: list[dict[str, Any]] = [
    {"type": t, "category": "behavior-account", "source": "web",
     "attributes": {"x": {"type": "number"}, "code": {"type": "string"},
                    "k": {"type": "string"}, "status": {"type": "string"}}}
    for t in ("a", "b", "c")
] + [
    {"type": "profile", "category": "profile-person", "source": "operator",
     "updates_profile": True,
     "attributes": {"birth_date": {"type": "string"}, "country": {"type": "string"}}},
]

_ids = itertools.count()


def make_catalog(*detectors: dict[str, Any], lateness_s: float = 3600.0) -> Catalog:
    return Catalog.from_wire({
        "settings": {"allowed_lateness_s": lateness_s},
        "signals": SIGNALS, "detectors": list(detectors), "actions": [],
    })


def signal(type_: str, at_ms: int, event_id: str | None = None, **attrs: Any) -> SignalRecord:
    return SignalRecord(event_id or f"ev{next(_ids)}", "cust", type_, at_ms, "test", attrs)


class Driver:
    """One customer on a catalog; returns moment names (or ``None`` for a duplicate)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.customer = CustomerState("cust")
        self.fired: list[Moment] = []

    def send(self, type_: str, at_ms: int, event_id: str | None = None,
             **attrs: Any) -> list[str] | None:
        moments = self.customer.apply(signal(type_, at_ms, event_id, **attrs), self.catalog)
        if moments is None:
            return None
        self.fired.extend(moments)
        return [m.name for m in moments]

    def tick(self, now_ms: int) -> list[str]:
        moments = self.customer.on_time(now_ms, self.catalog)
        self.fired.extend(moments)
        return [m.name for m in moments]
