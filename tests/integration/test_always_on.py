"""Emergency runs on the running engine: exactly the customers of 25 zip codes, each once,
throttled, while triggered events keep being decided."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import yaml

from shush.actors import ray_calls
from tests.factories import COMPETING_CATALOG, event_dict
from tests.integration.conftest import RunningEngine, start_engine

pytestmark = pytest.mark.integration

ZIPS = [f"{33100 + i:05d}" for i in range(25)]


@pytest.fixture(scope="module")
def engine(ray_session: None, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[RunningEngine]:
    data: dict[str, Any] = {k: list(v) for k, v in COMPETING_CATALOG.items()}
    data["signals"] = [*data["signals"], {
        "type": "address", "category": "profile-person", "source": "operator",
        "updates_profile": True, "attributes": {"zip": {"type": "string"}}}]
    data["moments"] = ["hurricane_warning", "statement_day"]
    data["actions"] = [*data["actions"], {
        "id": "hurricane_prep", "kind": "service", "channel": "sms", "value": 80,
        "prior_propensity": 0.9, "moments": ["hurricane_warning"]}, {
        "id": "statement_summary", "kind": "service", "channel": "email", "value": 5,
        "moments": ["statement_day"]}]
    directory = tmp_path_factory.mktemp("always-on")
    path = directory / "catalog.yaml"
    path.write_text(yaml.safe_dump(data))
    yearly = {"name": "statement-day", "cron": "0 9 1 1 *", "moment": "statement_day",
              "population": {"zips": [ZIPS[0]]}, "purpose": "yearly statement check"}
    running = start_engine(directory, catalog_paths=[str(path)], scheduled_runs=[yearly])
    yield running
    running.client.close()
    running.engine.stop()


def test_an_emergency_run_reaches_exactly_its_zip_codes_while_triggers_flow(
        engine: RunningEngine) -> None:
    now = int(time.time() * 1000)
    inside = {f"z-in-{i}": ZIPS[i % 25] for i in range(200)}
    outside = {f"z-out-{i}": f"{90000 + i:05d}" for i in range(100)}
    result = engine.client.submit([event_dict(c, "address", now, zip=z)
                                   for c, z in {**inside, **outside}.items()])
    assert result.accepted == 300
    progress = engine.client.start_run("hurricane_warning", zips=ZIPS, rate_per_s=100,
                                       bypass_soft_caps=True, dedup_key="nws:hurricane-1",
                                       run_id="hurricane-1")  # the operator's gRPC call
    assert progress["selected"] == 200
    # Triggered traffic during the run is still decided promptly.
    started = time.monotonic()
    engine.client.submit([event_dict("z-trigger", "savings_withdrawal", int(time.time() * 1000),
                                     amount=9000.0)])
    assert engine.for_customer("z-trigger", timeout_s=5)
    trigger_latency_s = time.monotonic() - started
    treated = engine.wait_for(
        lambda ts: sum(t["action_id"] == "hurricane_prep" for t in ts) >= 200, timeout_s=20)
    reached = [t["customer_id"] for t in treated if t["action_id"] == "hurricane_prep"]
    assert sorted(reached) == sorted(inside)  # exactly the 25 zip codes, each once
    [summary] = [r for r in engine.client.runs() if r["run_id"] == "hurricane-1"]
    assert (summary["selected"], summary["injected"], summary["treated"]) == (200, 200, 200)
    assert summary["state"] == "done"
    # 200 customers at 100/s take about 2 s (after a 1 s burst): the run was throttled.
    assert summary["finished_ms"] - summary["started_ms"] >= 500
    assert trigger_latency_s < 5


def test_a_run_request_without_a_population_is_refused_with_the_field(
        engine: RunningEngine) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        engine.client.start_run("hurricane_warning")
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "population" in refused.value.details()


def test_a_scheduled_run_fires_once_for_its_latest_missed_time(engine: RunningEngine) -> None:
    customers = [f"s-{i}" for i in range(6)]
    engine.client.submit([event_dict(c, "address", int(time.time() * 1000), zip=ZIPS[0])
                          for c in customers])
    supervisor = engine.engine.supervisor
    two_years_on = int(time.time() * 1000) + 2 * 366 * 86_400_000
    [run_id] = ray_calls.call_blocking(supervisor, "start_scheduled", two_years_on,
                                       timeout_s=30)  # two missed firings: one run
    assert run_id.startswith("sched:statement-day@")
    assert ray_calls.call_blocking(supervisor, "start_scheduled", two_years_on,
                                   timeout_s=30) == []
    treated = engine.wait_for(lambda ts: set(customers) <= {
        t["customer_id"] for t in ts if t["action_id"] == "statement_summary"})
    reached = sorted(t["customer_id"] for t in treated if t["action_id"] == "statement_summary")
    assert set(customers) <= set(reached) and len(reached) == len(set(reached))
