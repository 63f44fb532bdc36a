"""Deciding through the running engine: arbitration with levers, consent, holdout, budgets,
quiet hours, and propensity learned from outcomes."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from shush.actors import ray_calls
from shush.engine import codec
from tests.factories import event_dict
from tests.integration.conftest import RunningEngine, start_engine

pytestmark = pytest.mark.integration


def _catalog(quiet_start: str, quiet_end: str) -> dict[str, Any]:
    def signal(type_: str, category: str, source: str, **attrs: str) -> dict[str, Any]:
        return {"type": type_, "category": category, "source": source,
                "attributes": {k: {"type": v} for k, v in attrs.items()}}

    def level(id_: str, signal_type: str, attribute: str, value: float,
              urgency: float) -> dict[str, Any]:
        return {"id": id_, "kind": "threshold", "signal": signal_type, "attribute": attribute,
                "op": ">=", "value": value, "mode": "level", "moment": id_,
                "urgency": urgency, "half_life_s": 86400}

    def action(id_: str, kind: str, channel: str, value: float, p: float,
               moments: list[str]) -> dict[str, Any]:
        return {"id": id_, "kind": kind, "channel": channel, "value": value,
                "prior_propensity": p, "moments": moments}

    profile = signal("profile_update", "profile-person", "operator", segment="string",
                     tz="string", consent_email_marketing="boolean")
    profile["updates_profile"] = True
    return {
        "signals": [profile,
                    signal("browse", "behavior-person", "web", minutes="number"),
                    signal("weather_alert", "environmental", "feed", severity="integer"),
                    signal("withdrawal", "behavior-account", "atm", amount="number"),
                    signal("purchase", "behavior-account", "web", amount="number"),
                    signal("app_open", "behavior-device", "mobile", seconds="number")],
        "detectors": [level("loan_intent", "browse", "minutes", 5, 0.8),
                      level("severe_storm", "weather_alert", "severity", 3, 1.0),
                      level("large_withdrawal", "withdrawal", "amount", 1000, 1.0),
                      level("big_purchase", "purchase", "amount", 500, 1.0),
                      level("app_open", "app_open", "seconds", 0, 1.0)],
        "actions": [action("loan_offer", "marketing", "email", 200, 0.5, ["loan_intent"]),
                    action("storm_safety", "service", "sms", 100, 0.9, ["severe_storm"]),
                    action("probe_offer", "marketing", "web", 50, 0.5, ["large_withdrawal"]),
                    action("promo_email", "marketing", "email", 10, 0.5, ["large_withdrawal"]),
                    action("vip_gift", "marketing", "phone", 100, 0.5, ["big_purchase"]),
                    action("thank_you", "service", "email", 10, 0.5, ["big_purchase"]),
                    action("push_tip", "service", "push", 5, 0.5, ["app_open"])],
        "policies": {
            "quiet_hours": [{"start": quiet_start, "end": quiet_end, "channels": ["push"],
                             "classes": ["service"]}],
            "actions": {"probe_offer": {"holdout_pct": 100},
                        "vip_gift": {"budget_per_day": 1}},
        },
    }


@pytest.fixture(scope="module")
def engine(ray_session: None, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[RunningEngine]:
    now = datetime.now(UTC)
    start, end = ((now + timedelta(hours=h)).strftime("%H:%M") for h in (-2, 2))
    directory = tmp_path_factory.mktemp("deciding")
    path = directory / "deciding.yaml"
    path.write_text(yaml.safe_dump(_catalog(start, end), sort_keys=False))
    running = start_engine(directory, catalog_paths=[str(path)])
    yield running
    running.client.close()
    running.engine.stop()


def now_ms() -> int:
    return int(time.time() * 1000)


def new_customer() -> str:
    return f"d-{uuid.uuid4().hex[:10]}"


def test_the_storm_service_need_beats_the_loan_offer_unless_a_lever_says_otherwise(
        engine: RunningEngine) -> None:
    first, second = new_customer(), new_customer()
    for customer in (first, second):
        if customer == second:
            engine.client.set_lever("loan_offer", 1.5)
        try:
            engine.client.submit([event_dict(customer, "browse", now_ms(), minutes=12.0),
                                  event_dict(customer, "weather_alert", now_ms(), severity=4)])
            engine.for_customer(customer)
        finally:
            engine.client.set_lever("loan_offer", 1.0)
    [storm] = engine.for_customer(first)
    assert storm["action_id"] == "storm_safety"  # 0.9 × 1.0 × 100 = 90 > 0.5 × 0.8 × 200 = 80
    assert "ahead of loan_offer (80.00)" in storm["payload"]["why"][0]
    [loan] = engine.for_customer(second)
    assert loan["action_id"] == "loan_offer"  # × 1.5 = 120
    assert loan["payload"]["factors"]["l"] == 1.5


def test_consent_removes_the_email_and_the_explanation_says_so(engine: RunningEngine) -> None:
    customer = new_customer()
    engine.client.submit([
        event_dict(customer, "profile_update", now_ms(), consent_email_marketing=False),
        event_dict(customer, "browse", now_ms(), minutes=30.0)])
    time.sleep(1.0)
    assert engine.for_customer(customer, timeout_s=0.5) == []
    [decision] = engine.client.explain(customer)
    assert decision["winner"] is None
    assert [(r["action_id"], r["policy"]) for r in decision["removed"]] == [
        ("loan_offer", "consent")]


def test_a_held_out_customer_gets_nothing_and_the_decision_says_why(
        engine: RunningEngine) -> None:
    customer = new_customer()
    engine.client.submit([event_dict(customer, "withdrawal", now_ms(), amount=5000.0)])
    deadline = time.monotonic() + 10
    while not engine.client.explain(customer) and time.monotonic() < deadline:
        time.sleep(0.05)
    [decision] = engine.client.explain(customer)
    assert decision["winner"] == "probe_offer"
    assert any("holdout" in reason for reason in decision["reasons"])
    time.sleep(0.3)
    assert engine.for_customer(customer, timeout_s=0.2) == []


def test_a_spent_budget_passes_the_win_to_the_next_candidate(engine: RunningEngine) -> None:
    first, second = new_customer(), new_customer()
    engine.client.submit([event_dict(first, "purchase", now_ms(), amount=900.0)])
    assert [t["action_id"] for t in engine.for_customer(first)] == ["vip_gift"]
    engine.client.submit([event_dict(second, "purchase", now_ms(), amount=900.0)])
    [treatment] = engine.for_customer(second)
    assert treatment["action_id"] == "thank_you"
    [decision] = engine.client.explain(second)
    assert [(r["action_id"], r["policy"]) for r in decision["removed"]] == [
        ("vip_gift", "budget")]


def test_quiet_hours_defer_the_send_instead_of_dropping_it(engine: RunningEngine) -> None:
    customer = new_customer()
    engine.client.submit([event_dict(customer, "app_open", now_ms(), seconds=3.0)])
    deadline = time.monotonic() + 10
    while not engine.client.explain(customer) and time.monotonic() < deadline:
        time.sleep(0.05)
    [decision] = engine.client.explain(customer)
    assert decision["winner"] == "push_tip"
    assert any("quiet hours" in reason for reason in decision["reasons"])
    assert engine.for_customer(customer, timeout_s=0.5) == []


def test_outcomes_teach_the_propensity(engine: RunningEngine) -> None:
    arbitrator = ray_calls.get_actor("arbitration-0", engine.engine.config.namespace)
    before = ray_calls.call_blocking(arbitrator, "propensities", timeout_s=10)["storm_safety"]
    customers = [new_customer() for _ in range(5)]
    engine.client.submit([event_dict(c, "weather_alert", now_ms(), severity=5)
                          for c in customers])
    treated = engine.wait_for(lambda ts: sum(t["customer_id"] in customers for t in ts) == 5)
    outcomes = [[t["treatment_id"], t["customer_id"], "rejected", now_ms()]
                for t in treated if t["customer_id"] in customers]
    router = engine.engine.routers[0]
    acks = ray_calls.call_blocking(router, "route_outcomes", outcomes, timeout_s=10)
    assert [a[0] for a in acks] == [codec.ACCEPTED] * 5
    deadline = time.monotonic() + 10
    after = before
    while after == before and time.monotonic() < deadline:
        time.sleep(0.1)
        after = ray_calls.call_blocking(arbitrator, "propensities", timeout_s=10)["storm_safety"]
    assert after < before  # five rejections pull P below its prior
    [row] = [r for r in engine.client.report() if r["action_id"] == "storm_safety"]
    assert row["treated"] >= 5 and row["outcomes"].get("rejected", 0) >= 5
