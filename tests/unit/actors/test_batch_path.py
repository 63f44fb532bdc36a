"""A batch's way in, stage by stage: from the gateway's and the router's stamps to applied."""

from __future__ import annotations

import pytest

from shush.actors.batch_path import PATH_BOUNDS_MS, BatchPath


def _stages(path: BatchPath) -> dict[str, float]:
    return {stage: timing["total_ms"] for stage, timing in path.to_wire()["steps"].items()}


def test_each_stage_is_the_time_between_two_stamps() -> None:
    path = BatchPath()
    path.record([100.000, 100.002, 100.003], arrived_s=100.005, locked_s=100.006,
                applied_s=100.010)
    assert path.to_wire()["bounds_ms"] == list(PATH_BOUNDS_MS)
    assert _stages(path) == pytest.approx({
        "gateway → router": 2.0, "in the router": 1.0, "router → shard": 2.0,
        "waiting for earlier batches": 1.0, "journal and apply": 4.0,
        "gateway → applied": 10.0})
    assert set(_stages(path)) == set(BatchPath.STAGES)


def test_an_unstamped_gateway_leaves_its_stages_out_and_skew_is_not_a_duration() -> None:
    path = BatchPath()
    # a router whose clock runs ahead of the shard's: its hop would be negative
    path.record([None, 50.000, 50.004], arrived_s=50.003, locked_s=50.003, applied_s=50.005)
    stages = _stages(path)
    assert "gateway → router" not in stages and "gateway → applied" not in stages
    assert stages["router → shard"] == 0.0
    assert stages["journal and apply"] == pytest.approx(2.0)


def test_malformed_stamps_record_nothing() -> None:
    path = BatchPath()
    for stamps in ([1.0, None, None], [1.0, 2.0], "stamps", [1.0, "2", 3.0]):
        path.record(stamps, arrived_s=2.0, locked_s=2.0, applied_s=2.0)  # type: ignore[arg-type]
    assert path.to_wire()["steps"] == {}
