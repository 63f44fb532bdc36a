"""How batches and Decides reached a shard, stage by stage, from the stamps they carry."""

from __future__ import annotations

from typing import Any

import pytest

from shush.actors.way_in import WAY_IN_BOUNDS_MS, WayIn


def _stages(way_in: WayIn) -> dict[str, float]:
    return {stage: timing["total_ms"] for stage, timing in way_in.to_wire()["steps"].items()}


def test_each_stage_of_a_batch_is_the_time_between_two_stamps() -> None:
    way_in = WayIn()
    way_in.record_batch([100.000, 100.002, 100.003], arrived_s=100.005, locked_s=100.006,
                        applied_s=100.010)
    assert way_in.to_wire()["bounds_ms"] == list(WAY_IN_BOUNDS_MS)
    assert _stages(way_in) == pytest.approx({
        "in the gateway": 2.0, "in the router": 1.0, "router → shard": 2.0,
        "waiting for earlier batches": 1.0, "journal and apply": 4.0,
        "gateway → applied": 10.0})
    assert set(_stages(way_in)) == set(WayIn.BATCH_STAGES)


def test_an_unstamped_gateway_leaves_its_stages_out_and_skew_is_not_a_duration() -> None:
    way_in = WayIn()
    # a router whose clock runs ahead of the shard's: its hop would be negative
    way_in.record_batch([None, 50.000, 50.004], arrived_s=50.003, locked_s=50.003,
                        applied_s=50.005)
    stages = _stages(way_in)
    assert "in the gateway" not in stages and "gateway → applied" not in stages
    assert stages["router → shard"] == 0.0
    assert stages["journal and apply"] == pytest.approx(2.0)


def test_malformed_stamps_record_nothing() -> None:
    way_in = WayIn()
    stamps: Any
    for stamps in ([1.0, None, None], [1.0, 2.0], "stamps", [1.0, "2", 3.0], [True, 1.0, 2.0]):
        way_in.record_batch(stamps, arrived_s=2.0, locked_s=2.0, applied_s=2.0)
    way_in.record_decide("soon", arrived_s=2.0, claimed_s=2.0, done_s=2.0)  # type: ignore[arg-type]
    assert set(_stages(way_in)) == {"decide: waiting for the customer", "decide: deciding"}


def test_a_decides_stages_are_its_hop_its_wait_for_the_customer_and_the_deciding() -> None:
    way_in = WayIn()
    way_in.record_decide(10.000, arrived_s=10.002, claimed_s=10.007, done_s=10.008)
    way_in.record_decide(None, arrived_s=20.000, claimed_s=20.000, done_s=20.001)
    wire = way_in.to_wire()["steps"]
    assert set(wire) == set(WayIn.DECIDE_STAGES)
    assert sum(wire["decide: gateway → shard"]["counts"]) == 1  # the unstamped one: no hop
    assert _stages(way_in) == pytest.approx({
        "decide: gateway → shard": 2.0, "decide: waiting for the customer": 5.0,
        "decide: deciding": 2.0})
