"""The shipped catalogs: each loads alone and all together, every category and use case is
covered with an immediate and a longer-term action; invalid catalogs name file, item, field."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import pytest
import yaml

from shush.engine.catalog import Category, bundled_catalog_path, load_catalog
from shush.engine.errors import CatalogError

NAMES = ("bank", "telco", "insurance", "devices", "retail")

# Each use case of issue 3, and the moment that answers it.
USE_CASES = {
    "large withdrawal from savings": "large_withdrawal",
    "average balance trending down": "balance_trending_down",
    "roaming charges near the limit": "roaming_near_limit",
    "device/machine failure": "device_failure",
    "looming failure (distinct error codes)": "looming_device_failure",
    "browsing shows purchase intent": "purchase_intent",
    "Black Friday approaching": "black_friday_approaching",
    "contract terms changed": "contract_terms_changed",
    "hurricane warning": "hurricane_warning",
    "extreme cold warning": "extreme_cold_warning",
    "churn model score above threshold": "churn_risk_model",
    "discontent across touchpoints": "churn_risk_discontent",
    "no deposits in 30 days": "no_recent_deposit",
    "privacy policy change": "privacy_policy_changed",
    "birthday milestones": "birthday_milestone",
    "replenish a consumable": "consumable_running_out",
    "interest rate of an account type rises": "savings_rate_rise",
    "investable assets cross a threshold": "investable_assets_threshold",
    "order status change": "order_problem",
    "obtained a driver licence": "driver_licence_obtained",
    "new loyalty tier": "loyalty_tier_reached",
    "transaction denied": "card_declined",
    "service unavailable (lost connection)": "service_unavailable_device",
    "missed direct deposit": "missed_direct_deposit",
    "balance too low": "low_balance",
    "car crash": "car_crash",
    "severe storm": "severe_storm",
}


@pytest.mark.parametrize("name", NAMES)
def test_each_catalog_loads_alone(name: str) -> None:
    catalog = load_catalog([bundled_catalog_path(name)])
    assert catalog.detectors and catalog.actions


def test_all_catalogs_together_cover_every_category_and_use_case() -> None:
    catalog = load_catalog([bundled_catalog_path(n) for n in NAMES])
    assert {s.category for s in catalog.signals.values()} == set(get_args(Category))
    public = {d.moment for d in catalog.detectors.values() if not d.internal}
    missing = {case: m for case, m in USE_CASES.items() if m not in public}
    assert not missing
    kinds = {d.kind for d in catalog.detectors.values()}
    assert len(kinds) == 12
    for moment in public:
        actions = catalog.actions_by_moment.get(moment, [])
        assert len(actions) >= 2, f"{moment} needs an immediate and a longer-term action"


def test_bank_catalog_keeps_what_the_demo_relies_on() -> None:
    catalog = load_catalog([bundled_catalog_path("bank")])
    assert catalog.actions["advisor_retention_call"].value == 120
    assert catalog.actions["savings_rate_offer"].prior_propensity == 0.4
    assert catalog.settings.allowed_lateness_s == 3600


def write(tmp_path: Path, data: dict[str, Any], name: str = "bad.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


SIG = [{"type": "a", "category": "behavior-account", "source": "web",
        "attributes": {"x": {"type": "number"}, "code": {"type": "string"}}}]


@pytest.mark.parametrize(("detector", "item", "field", "reason"), [
    ({"id": "d1", "kind": "count", "signal": "a", "window_s": 0, "moment": "m"},
     "d1", "window_s", "greater than 0"),
    ({"id": "d2", "kind": "count", "signal": "a", "where": {"nope": 1}, "window_s": 5,
      "moment": "m"}, "d2", "where.nope", "no attribute"),
    ({"id": "d3", "kind": "distinct", "signal": "a", "attribute": "x", "window_s": 5,
      "moment": "m"}, "d3", "attribute", "expected string"),
    ({"id": "d4", "kind": "sequence", "steps": [{"signal": "a"}, {"signal": "zz"}],
      "window_s": 5, "moment": "m"}, "d4", "steps.1.signal", "unknown signal"),
    ({"id": "d5", "kind": "combination", "members": ["ghost"], "window_s": 5, "moment": "m"},
     "d5", "members.0", "unknown member"),
    ({"id": "d6", "kind": "trend", "signal": "a", "attribute": "x", "moment": "m"},
     "d6", "detectors.0.trend", "needs z_threshold"),
    ({"id": "d6b", "kind": "trend", "signal": "a", "attribute": "x", "z_threshold": 9,
      "moment": "m"}, "d6b", "z_threshold", "less than or equal to 6"),
    ({"id": "d7", "kind": "teleport", "moment": "m"}, "d7", "detectors.0", "kind"),
    ({"id": "d8", "kind": "calendar", "holiday": "No Such Day", "arm_on": ["a"],
      "moment": "m"}, "d8", "holiday", "no holiday"),
])
def test_invalid_detector_names_file_item_and_field(tmp_path: Path, detector: dict[str, Any],
                                                    item: str, field: str, reason: str) -> None:
    path = write(tmp_path, {"signals": SIG, "detectors": [detector]})
    with pytest.raises(CatalogError) as info:
        load_catalog([path])
    err = info.value
    assert (err.file, err.item) == (str(path), item)
    assert err.field is not None and field in err.field
    assert reason in str(err)


def test_combination_cycle_and_internal_moment_actions_are_refused(tmp_path: Path) -> None:
    combos = [{"id": "p", "kind": "combination", "members": ["q"], "window_s": 5, "moment": "p"},
              {"id": "q", "kind": "combination", "members": ["p"], "window_s": 5, "moment": "q"}]
    with pytest.raises(CatalogError, match="cycle: p -> q -> p"):
        load_catalog([write(tmp_path, {"signals": SIG, "detectors": combos})])
    internal = {"signals": SIG, "detectors": [
        {"id": "i", "kind": "count", "signal": "a", "window_s": 5, "internal": True,
         "moment": "hidden"}],
        "actions": [{"id": "act", "kind": "service", "channel": "sms", "value": 1,
                     "moments": ["hidden"]}]}
    with pytest.raises(CatalogError, match="internal") as info:
        load_catalog([write(tmp_path, internal)])
    assert (info.value.item, info.value.field) == ("act", "moments")


def test_files_that_disagree_on_settings_are_refused(tmp_path: Path) -> None:
    one = write(tmp_path, {"settings": {"allowed_lateness_s": 60}, "signals": SIG}, "one.yaml")
    two = write(tmp_path, {"settings": {"allowed_lateness_s": 90}}, "two.yaml")
    with pytest.raises(CatalogError) as info:
        load_catalog([one, two])
    assert (info.value.file, info.value.item, info.value.field) == (
        str(two), "settings", "allowed_lateness_s")
