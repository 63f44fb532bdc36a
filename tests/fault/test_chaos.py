"""Chaos, short form: steady load while shards and routers are killed at random; nothing
acknowledged is lost, nothing is applied or treated twice (see ``chaos_harness``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fault.chaos_harness import Batch, ChaosReport, check, expected_key, run_chaos

pytestmark = pytest.mark.integration


def nothing_lost_nor_repeated(report: ChaosReport) -> str:
    """Assert what every chaos run must show; return its figures (for further asserts)."""
    figures = "\n".join(report.lines())
    print("\n" + figures)
    assert report.acknowledged >= report.sent * 0.9, figures
    assert report.rejected == 0, figures
    assert (report.duplicates, report.treatment_duplicates) == (0, 0), figures
    assert (report.lost, report.lost_treatments) == (0, 0), figures
    assert report.treatments == report.ledger_rows == report.applied, figures
    assert all(k.actor_back_s is not None for k in report.kills), figures
    return figures


def test_kills_under_load_lose_nothing_and_repeat_nothing(ray_session: None,
                                                         tmp_path: Path) -> None:
    nothing_lost_nor_repeated(run_chaos(tmp_path, duration_s=16.0, rate=150.0, kills=4,
                                        batch_size=15, seed=11))


def test_kills_under_load_sent_straight_to_the_shards_lose_nothing_and_repeat_nothing(
        ray_session: None, tmp_path: Path) -> None:
    report = run_chaos(tmp_path, duration_s=16.0, rate=150.0, kills=4, batch_size=15, seed=12,
                       straight_to_shards=True, after_last_back_s=5.0)
    figures = nothing_lost_nor_repeated(report)
    assert {k.kind for k in report.kills} == {"shard"}, figures
    assert report.straight_to_shards > 0, figures


def test_the_checker_catches_losses_and_repeats() -> None:
    events = [{"event_id": f"e{i}", "customer_id": f"c{i}"} for i in range(4)]
    batches = [Batch(events[:2], 0.0, acked=2), Batch(events[2:], 0.0, acked=2)]
    logs = {"c0": ["e0"], "c1": ["e1", "e1"], "c2": ["e2"]}  # e1 twice, e3 lost
    keys = [expected_key("c0", "e0"), expected_key("c0", "e0"), expected_key("c1", "e1"),
            expected_key("c3", "e3")]  # e0's key twice, e2 without treatment
    report = ChaosReport()
    check(report, batches, logs, [{"idempotency_key": k} for k in keys])
    assert (report.sent, report.acknowledged, report.applied) == (4, 4, 3)
    assert (report.duplicates, report.lost) == (1, 1)
    assert (report.treatment_duplicates, report.lost_treatments) == (1, 1)
    assert not report.ok
