"""The weather feed and replays on a running engine."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from shush.adapters.channels.jsonl import read_jsonl
from shush.adapters.feeds.geo import ZipCountyIndex
from shush.cluster.config_loader import load_engine_catalog
from shush.cluster.replay import replay_file
from shush.cluster.weather import WeatherFeed
from shush.engine.catalog import bundled_catalog_path
from tests.factories import COMPETING_CATALOG, event_dict
from tests.integration.conftest import start_engine

pytestmark = pytest.mark.integration

NWS = Path(__file__).resolve().parents[1] / "data" / "nws"
FREEZE = NWS / "beardicus_2022-12-23_AL_HardFreezeWarning_TAE.xml"
DAY_MS = 86_400_000


def test_a_freeze_warning_reaches_the_customers_of_its_counties_once(
        ray_session: None, tmp_path: Path) -> None:
    data: dict[str, Any] = {k: list(v) for k, v in COMPETING_CATALOG.items()}
    data["signals"] = [*data["signals"], {
        "type": "address", "category": "profile-person", "source": "operator",
        "updates_profile": True, "attributes": {"zip": {"type": "string"}}}]
    data["moments"] = ["extreme_cold_warning"]
    data["actions"] = [*data["actions"], {
        "id": "pipe_freeze_tips", "kind": "service", "channel": "sms", "value": 40,
        "prior_propensity": 0.8, "moments": ["extreme_cold_warning"]}]
    path = tmp_path / "weather.yaml"
    path.write_text(yaml.safe_dump(data))
    engine = start_engine(tmp_path / "engine", catalog_paths=[str(path)])
    try:
        # Dothan (36301) and Enterprise (36330) lie in the warned counties; Birmingham does not.
        homes = {"w-dothan": "36301", "w-enterprise": "36330", "w-birmingham": "35203"}
        engine.client.submit([event_dict(c, "address", 1_700_000_000_000, zip=z)
                              for c, z in homes.items()])
        feed = WeatherFeed(ZipCountyIndex.from_csv())
        when = datetime.fromisoformat("2022-12-23T02:00:00-06:00")
        started, skipped, rejected = feed.poll(engine.engine.supervisor, FREEZE, when)
        assert rejected == [] and skipped == []
        [run] = started
        assert run["selected"] == 2
        treated = engine.wait_for(lambda ts: len(ts) >= 2)
        assert sorted(t["customer_id"] for t in treated) == ["w-dothan", "w-enterprise"]
        assert {t["action_id"] for t in treated} == {"pipe_freeze_tips"}
        # The same alert read again (a repeat of the incident) starts nothing new.
        again, skipped, _ = feed.poll(engine.engine.supervisor, FREEZE, when)
        assert again == [] and skipped[0].reason == "already seen"
        # Judged after it expired, the alert does nothing.
        later = WeatherFeed(ZipCountyIndex.from_csv()).poll(
            engine.engine.supervisor, FREEZE, datetime.fromisoformat("2022-12-24T00:00:00-06:00"))
        assert later[0] == [] and "expired" in later[1][0].reason
    finally:
        engine.client.close()
        engine.engine.stop()


def test_a_replay_runs_sixty_days_of_timers_in_seconds(ray_session: None,
                                                       tmp_path: Path) -> None:
    start = 1_767_225_600_000  # 2026-01-01
    rows: list[dict[str, Any]] = []
    for customer, deposits in (("r-lapsed", [1]), ("r-regular", [1, 20, 40])):
        rows.append(event_dict(customer, "profile_update", start, segment="mass", age=40))
        rows.extend(event_dict(customer, "deposit", start + d * DAY_MS, amount=100.0)
                    for d in deposits)
    rows.extend(event_dict(f"r-filler-{i}", "balance_update", start + 60 * DAY_MS,
                           balance=1000.0) for i in range(40))  # moves every shard's clock
    log = tmp_path / "events.jsonl"
    log.write_text("\n".join(json.dumps({**r, "occurred_at": r.pop("occurred_at_ms")})
                             for r in rows) + "\nnot json\n")
    engine = start_engine(tmp_path / "engine", clock="event",
                          catalog_paths=[str(bundled_catalog_path("bank"))])
    try:
        report = replay_file(engine.engine.target, log, load_engine_catalog(engine.engine.config))
        assert report.accepted == len(rows) and len(report.rejected) == 1
        treated = engine.wait_for(lambda ts: any(t["customer_id"] == "r-lapsed" for t in ts))
        lapsed = [t for t in treated if t["customer_id"] == "r-lapsed"]
        assert [t["payload"]["moment"] for t in lapsed] == ["no_recent_deposit"]
        assert not [t for t in read_jsonl(engine.treatments_path)
                    if t["customer_id"] == "r-regular"]
    finally:
        engine.client.close()
        engine.engine.stop()


def test_what_if_replays_the_log_against_a_changed_catalog(ray_session: None,
                                                           tmp_path: Path) -> None:
    from shush.cluster.replay import compare_treatments, replay_in_engine
    from tests.factories import write_catalog

    base = write_catalog(tmp_path, COMPETING_CATALOG, "base.yaml")
    changed_data = {**COMPETING_CATALOG, "actions": [
        {**a, "value": 500} if a["id"] == "rate_offer" else a
        for a in COMPETING_CATALOG["actions"]]}
    changed = write_catalog(tmp_path, changed_data, "changed.yaml")
    log = tmp_path / "log.jsonl"
    log.write_text("\n".join(json.dumps({
        "event_id": f"w{i}", "customer_id": f"wi-{i}", "type": "savings_withdrawal",
        "occurred_at": 1_767_225_600_000 + i, "attributes": {"amount": 6000.0}})
        for i in range(5)))
    _, before = replay_in_engine(log, [str(base)], tmp_path / "a", namespace="wi-a")
    _, after = replay_in_engine(log, [str(changed)], tmp_path / "b", namespace="wi-b")
    diff = compare_treatments(before, after)
    assert diff.per_action == [("advisor_call", 5, 0), ("rate_offer", 0, 5)]
    assert (diff.customers_changed, diff.customers) == (5, 5)
