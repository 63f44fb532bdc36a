"""Complex events through the running engine: discontent across touchpoints becomes churn risk."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from shush.engine.catalog import bundled_catalog_path
from tests.factories import event_dict
from tests.integration.conftest import RunningEngine, start_engine

pytestmark = pytest.mark.integration

DAY_MS = 86_400_000


@pytest.fixture(scope="module")
def telco(ray_session: None, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[RunningEngine]:
    running = start_engine(tmp_path_factory.mktemp("telco"),
                           catalog_paths=[str(bundled_catalog_path("telco"))])
    yield running
    running.client.close()
    running.engine.stop()


def _complaints(customer: str, days_ago: list[float], types: list[str]) -> list[dict[str, object]]:
    now = int(time.time() * 1000)
    return [event_dict(customer, type_, now - int(d * DAY_MS)) for d, type_ in
            zip(days_ago, types, strict=True)]


def test_three_touchpoints_within_seven_days_make_a_churn_moment(telco: RunningEngine) -> None:
    result = telco.client.submit(
        _complaints("t-three", [3, 2, 0.01], ["web_complaint", "ivr_complaint",
                                              "store_complaint"])
        + _complaints("t-two", [3, 0.01], ["web_complaint", "ivr_complaint"])
        + _complaints("t-spread", [10, 5, 0.01], ["web_complaint", "ivr_complaint",
                                                  "store_complaint"]))
    assert result.accepted == 8 and result.rejected == []
    [treatment] = telco.for_customer("t-three")
    assert treatment["payload"]["moment"] == "churn_risk_discontent"
    assert treatment["action_id"] == "retention_call"  # 0.35 × 150 beats 0.25 × 90
    time.sleep(0.5)
    assert {t["customer_id"] for t in telco.treatments()} == {"t-three"}
