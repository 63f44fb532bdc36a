from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from shush.cluster.config_loader import load_config, load_engine_catalog
from shush.engine.catalog import bundled_catalog_path, load_catalog
from shush.engine.errors import CatalogError
from tests.factories import COMPETING_CATALOG, write_catalog


def _broken(mutate: Any) -> dict[str, Any]:
    data = copy.deepcopy(COMPETING_CATALOG)
    mutate(data)
    return data


@pytest.mark.parametrize(("mutate", "item", "field", "reason"), [
    (lambda d: d["detectors"][0].update(op="=>"), "large_withdrawal", "detectors.0.threshold.op",
     "Input should be"),
    (lambda d: d["detectors"][0].update(signal="nope"), "large_withdrawal", "signal",
     "unknown signal type 'nope'"),
    (lambda d: d["detectors"][0].update(attribute="nope"), "large_withdrawal", "attribute",
     "has no attribute 'nope'"),
    (lambda d: d["actions"][1].update(moments=["ghost"]), "rate_offer", "moments",
     "no detector produces moment 'ghost'"),
    (lambda d: d["actions"][1].update(kind="spam"), "rate_offer", "actions.1.kind",
     "Input should be"),
    (lambda d: d["signals"][1].update(category="gossip"), "savings_withdrawal",
     "signals.1.category", "Input should be"),
    (lambda d: d["actions"].append(dict(d["actions"][0])), "advisor_call", "id", "twice"),
    (lambda d: d["detectors"][1].update(reset=50), "low_balance", "detectors.1.threshold",
     "other side"),
])
def test_invalid_catalog_names_file_item_and_field(tmp_path: Path, mutate: Any, item: str,
                                                   field: str, reason: str) -> None:
    path = write_catalog(tmp_path, _broken(mutate))
    with pytest.raises(CatalogError) as info:
        load_catalog([path])
    error = info.value
    assert error.file == str(path)
    assert error.item == item
    assert error.field == field
    assert reason in error.reason


def test_invalid_policy_expression_fails_at_load(tmp_path: Path) -> None:
    data = _broken(lambda d: d["actions"][0].update(eligibility="__import__('os')"))
    path = write_catalog(tmp_path, data)
    with pytest.raises(CatalogError) as info:
        load_engine_catalog(load_config(catalog_paths=[str(path)]))
    assert (info.value.file, info.value.item, info.value.field) == (
        str(path), "advisor_call", "eligibility")


def test_unreadable_and_non_yaml_files(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot read"):
        load_catalog([tmp_path / "missing.yaml"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("signals: [\n")
    with pytest.raises(CatalogError, match="not valid YAML"):
        load_catalog([bad])


def test_bundled_bank_catalog_loads() -> None:
    catalog = load_catalog([bundled_catalog_path("bank")])
    assert {"large_withdrawal", "card_declined", "low_balance"} <= set(catalog.detectors)
    assert catalog.sources["actions/advisor_retention_call"].endswith("bank.yaml")


def test_files_merge_and_duplicates_across_files_are_refused(tmp_path: Path) -> None:
    first = write_catalog(tmp_path, COMPETING_CATALOG, "a.yaml")
    extra = {"signals": [{"type": "browse", "category": "behavior-person", "source": "web",
                          "attributes": {"page": {"type": "string"}}}]}
    second = write_catalog(tmp_path, extra, "b.yaml")
    assert "browse" in load_catalog([first, second]).signals
    with pytest.raises(CatalogError, match="declared twice") as info:
        load_catalog([first, first])
    assert info.value.item == "profile_update"
