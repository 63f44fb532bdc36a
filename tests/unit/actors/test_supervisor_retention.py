"""The supervisor's purge of history past its retention, driven without Ray."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from shush.actors import supervisor as supervisor_module
from shush.actors.supervisor import SupervisorActorBody
from shush.adapters.stores import DeadLetterRow, DecisionRow, MemoryStateStore, TreatmentRow
from shush.engine.config import EngineConfig, RetentionConfig

DAY_MS = 86_400_000
NOW_MS = 100 * DAY_MS


def supervisor(store: MemoryStateStore, **retention: object) -> SupervisorActorBody:
    config = EngineConfig(retention=RetentionConfig.model_validate(retention))
    return SupervisorActorBody(config.model_dump_json(), {}, None, None, lambda: store)


def fill(store: MemoryStateStore) -> None:
    """Five decisions, five sent treatments and a dead letter a day for the last 10 days
    (day 90..99)."""
    for day in range(90, 100):
        at_ms = day * DAY_MS
        rows = [TreatmentRow(f"k{day}-{i}", f"t{day}-{i}", f"c{i}", "offer", at_ms, b"p")
                for i in range(5)]
        store.record_treatments(rows, decisions=[DecisionRow(f"c{i}", at_ms, b"d")
                                                 for i in range(5)])
        store.mark_dispatched([r.idempotency_key for r in rows], at_ms)
        store.dead_letter([DeadLetterRow("event", "unknown signal type", "type", b"x", at_ms)])


def test_history_past_its_retention_is_purged_in_chunks(monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    monkeypatch.setattr(supervisor_module, "PURGE_PAUSE_S", 0.0)
    store = MemoryStateStore()
    fill(store)
    body = supervisor(store, decisions_days=3, treatments_days=5, dead_letters_days=1,
                      purge_chunk_rows=4)
    purged = asyncio.run(body.purge_history(NOW_MS))
    # decisions older than day 97 (days 90-96: 35 rows), treatments older than day 95 (25),
    # dead letters older than day 99 (9)
    assert purged == {"decisions": 35, "treatments": 25, "dead_letters": 9}
    assert len(store.recent_decisions("c0", 100)) == 3
    assert store.treatment_count() == 25
    assert not store.has_treatment("k94-0") and store.has_treatment("k95-0")
    assert store.dead_letter_count() == 1
    assert asyncio.run(body.purge_history(NOW_MS)) == {"decisions": 0, "treatments": 0,
                                                        "dead_letters": 0}
    assert body.purged == {"decisions": 35, "treatments": 25, "dead_letters": 9}


def test_history_without_a_retention_is_kept() -> None:
    store = MemoryStateStore()
    fill(store)
    body = supervisor(store, decisions_days=None, treatments_days=None,
                      dead_letters_days=None)
    assert asyncio.run(body.purge_history(NOW_MS)) == {}
    assert store.treatment_count() == 50
    assert store.dead_letter_count() == 10


@pytest.mark.parametrize("field", ["decisions_days", "treatments_days", "dead_letters_days",
                                   "purge_chunk_rows"])
def test_a_retention_that_is_not_positive_is_refused(field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        RetentionConfig.model_validate({field: 0})
