"""History past its retention leaves the store of a running engine; what is recent stays."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from shush.adapters.stores import make_store
from tests.factories import event_dict
from tests.integration.conftest import start_engine

pytestmark = pytest.mark.integration


def test_the_supervisor_purges_decisions_and_sent_treatments_past_retention(
        ray_session: None, tmp_path: Path) -> None:
    seconds = 1 / 86_400  # retention is in days
    running = start_engine(tmp_path, retention={
        "decisions_days": 5 * seconds, "treatments_days": 5 * seconds, "purge_interval_s": 0.2})
    try:
        alice = f"cust-{uuid.uuid4().hex[:10]}"
        running.client.submit([event_dict(alice, "savings_withdrawal", int(time.time() * 1000),
                                          amount=8000.0)])
        [treatment] = running.for_customer(alice)
        store = make_store(running.engine.config.resolved_store_url)
        try:
            assert store.has_treatment(treatment["idempotency_key"])  # recent: kept
            deadline = time.monotonic() + 30
            purged: dict[str, int] = {}
            while time.monotonic() < deadline and not (purged.get("decisions")
                                                       and purged.get("treatments")):
                time.sleep(0.2)
                purged = running.client.health()[1]["purged"]
            assert purged == {"decisions": 1, "treatments": 1, "dead_letters": 0}
            assert not store.has_treatment(treatment["idempotency_key"])
            assert store.recent_decisions(alice, 10) == []
        finally:
            store.close()
    finally:
        running.client.close()
        running.engine.stop()
