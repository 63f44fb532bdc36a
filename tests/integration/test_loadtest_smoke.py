"""`shush loadtest` against a running engine, briefly: the report is complete and consistent."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from shush.cluster.loadtest import run_load
from shush.cluster.loadtest_workload import LoadSpec
from shush.engine.catalog import bundled_catalog_path
from tests.integration.conftest import start_engine

pytestmark = pytest.mark.integration


def test_a_short_open_loop_run_measures_every_treatment(ray_session: None,
                                                        tmp_path: Path) -> None:
    engine = start_engine(tmp_path, catalog_paths=[str(bundled_catalog_path("bank"))])
    try:
        spec = LoadSpec(target=engine.engine.target, channel_path=engine.treatments_path,
                        rate_eps=400, duration_s=2, batch_size=50, senders=2, customers=500,
                        trigger_fraction=0.05, decide_rate_hz=5, drain_s=5)
        report = asyncio.run(run_load(spec))
    finally:
        engine.client.close()
        engine.engine.stop()
    throughput, treatments = report["throughput"], report["treatments"]
    assert throughput["sent"] >= 700 and throughput["accepted"] == throughput["sent"]
    assert report["errors"]["rejected"] == 0 and report["errors"]["rpc_errors"] == 0
    assert treatments["triggers"] > 0
    assert treatments["matched"] == treatments["triggers"] and treatments["missing"] == 0
    latency = report["latency_ms"]["submit_to_treatment"]
    assert 0 < latency["p50"] <= latency["p99"] <= latency["p99_9"]
    snapshots = report["shard_snapshots"]  # far below max_replay_events: no catch-up
    assert snapshots and all(s["catch_ups"] == 0 and s["replay_backlog"] >= 0
                             for s in snapshots)
