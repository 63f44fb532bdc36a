"""Small builders shared by the unit and integration tests."""

from __future__ import annotations

import copy
import itertools
from pathlib import Path
from typing import Any

import yaml

_ids = itertools.count()

T0_MS = 1_750_000_000_000  # a fixed event time for deterministic tests

COMPETING_CATALOG: dict[str, Any] = {
    "signals": [
        {"type": "profile_update", "category": "profile-person", "source": "operator",
         "updates_profile": True,
         "attributes": {"segment": {"type": "string"}, "age": {"type": "integer"}}},
        {"type": "savings_withdrawal", "category": "behavior-account", "source": "atm",
         "attributes": {"amount": {"type": "number", "required": True}}},
        {"type": "balance_update", "category": "account status", "source": "core-banking",
         "attributes": {"balance": {"type": "number", "required": True}}},
    ],
    "detectors": [
        {"id": "large_withdrawal", "kind": "threshold", "signal": "savings_withdrawal",
         "attribute": "amount", "op": ">=", "value": 5000, "mode": "level",
         "moment": "large_withdrawal", "urgency": 0.8, "half_life_s": 86400},
        {"id": "low_balance", "kind": "threshold", "signal": "balance_update",
         "attribute": "balance", "op": "<", "value": 100, "reset": 200,
         "moment": "low_balance", "urgency": 1.0, "half_life_s": 3600},
    ],
    "actions": [
        {"id": "advisor_call", "kind": "marketing", "channel": "phone", "value": 100,
         "prior_propensity": 0.3, "moments": ["large_withdrawal"],
         "eligibility": "profile.segment != 'student'"},
        {"id": "rate_offer", "kind": "marketing", "channel": "email", "value": 50,
         "prior_propensity": 0.4, "moments": ["large_withdrawal"]},
        {"id": "low_balance_sms", "kind": "service", "channel": "sms", "value": 30,
         "prior_propensity": 0.8, "moments": ["low_balance"]},
        {"id": "card_upgrade", "kind": "marketing", "channel": "web", "value": 10,
         "prior_propensity": 0.5},
    ],
}


def with_budgets(budgets: dict[str, int], data: dict[str, Any] | None = None
                 ) -> dict[str, Any]:
    """``data`` (default: the competing catalog) with these daily volume budgets."""
    catalog = copy.deepcopy(data or COMPETING_CATALOG)
    actions = catalog.setdefault("policies", {}).setdefault("actions", {})
    for action_id, per_day in budgets.items():
        actions.setdefault(action_id, {})["budget_per_day"] = per_day
    return catalog


def write_catalog(directory: Path, data: dict[str, Any] | None = None,
                  name: str = "catalog.yaml") -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(data or COMPETING_CATALOG, sort_keys=False))
    return path


def event(customer: str, type_: str, at_ms: int = T0_MS, event_id: str | None = None,
          **attributes: Any) -> list[Any]:
    """A wire event."""
    return [event_id or f"e{next(_ids)}", customer, type_, at_ms, "test", attributes]


def event_dict(customer: str, type_: str, at_ms: int, event_id: str | None = None,
               **attributes: Any) -> dict[str, Any]:
    ident, cust, typ, at, source, attrs = event(customer, type_, at_ms, event_id, **attributes)
    return {"event_id": ident, "customer_id": cust, "type": typ, "occurred_at_ms": at,
            "source": source, "attributes": attrs}
