"""The spine end to end: ShushClient -> gRPC -> router -> shard -> arbitration -> channel."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import grpc
import pytest

from shush.actors import ray_calls
from shush.adapters.client import AsyncShushClient
from tests.factories import event_dict
from tests.integration.conftest import RunningEngine

pytestmark = pytest.mark.integration


def now_ms() -> int:
    return int(time.time() * 1000)


def customer() -> str:
    return f"cust-{uuid.uuid4().hex[:10]}"


def test_a_withdrawal_becomes_a_treatment_with_every_factor(running: RunningEngine) -> None:
    alice = customer()
    result = running.client.submit([
        event_dict(alice, "profile_update", now_ms(), segment="affluent"),
        event_dict(alice, "savings_withdrawal", now_ms(), amount=8000.0),
    ])
    assert (result.accepted, result.rejected) == (2, [])
    [treatment] = running.for_customer(alice)
    assert treatment["action_id"] == "advisor_call"
    assert treatment["channel"] == "phone"
    factors = treatment["payload"]["factors"]
    assert factors["p"] == pytest.approx(0.3)
    assert factors["c"] == pytest.approx(0.8, rel=1e-3)  # decays a little with age
    assert (factors["v"], factors["l"]) == (100, 1.0)
    assert factors["score"] == pytest.approx(factors["p"] * factors["c"] * 100)
    assert treatment["idempotency_key"].startswith(f"{alice}|advisor_call|large_withdrawal@")
    assert treatment["payload"]["moment"] == "large_withdrawal"


def test_higher_pcvl_wins_and_a_lever_flips_it_at_run_time(running: RunningEngine) -> None:
    first, second = customer(), customer()
    running.client.submit([event_dict(first, "savings_withdrawal", now_ms(), amount=9000.0)])
    [treatment] = running.for_customer(first)
    assert treatment["action_id"] == "advisor_call"  # 0.3 × 0.8 × 100 = 24 > 0.4 × 0.8 × 50 = 16
    try:
        levers = running.client.set_lever("rate_offer", 2.0)  # 16 × 2 = 32 > 24
        assert levers["rate_offer"] == 2.0
        running.client.submit([event_dict(second, "savings_withdrawal", now_ms(),
                                          amount=9000.0)])
        [flipped] = running.for_customer(second)
        assert flipped["action_id"] == "rate_offer"
        assert flipped["payload"]["factors"]["l"] == 2.0
    finally:
        running.client.set_lever("rate_offer", 1.0)


def _shard_health(running: RunningEngine) -> list[dict[str, Any]]:
    config = running.engine.config
    return [ray_calls.call_blocking(
        ray_calls.get_actor(ray_calls.actor_name("shard", i), config.namespace), "health",
        timeout_s=10) for i in range(config.num_shards)]


def _scored_by_replicas(running: RunningEngine) -> int:
    return sum(health["scored_here"] for health in _shard_health(running))


def _lane_calls(running: RunningEngine, method: str) -> int:
    return sum(health["lane_calls"].get(method, 0) for health in _shard_health(running))


def test_batches_and_decides_reach_the_shards_by_their_lanes(running: RunningEngine) -> None:
    """On one node the routers' batches and the gateway's Decides skip Ray (actors.lanes)."""
    submits, decides = _lane_calls(running, "submit"), _lane_calls(running, "decide")
    erin = customer()
    running.client.submit([event_dict(erin, "savings_withdrawal", now_ms(), amount=10.0)])
    running.client.decide(erin, "web")
    assert _lane_calls(running, "submit") == submits + 1
    assert _lane_calls(running, "decide") == decides + 1


def test_shards_reach_the_arbitrators_by_their_lanes(running: RunningEngine) -> None:
    """Each maintenance tick a shard refreshes its scorer replica from its arbitrator."""
    config = running.engine.config
    deadline = time.monotonic() + 20
    while True:
        served = [ray_calls.call_blocking(
            ray_calls.get_actor(ray_calls.actor_name("arbitration", i), config.namespace),
            "health", timeout_s=10)["lane_calls"] for i in range(config.num_arbitrators)]
        if any(calls.get("replica", 0) for calls in served) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert any(calls.get("replica", 0) for calls in served)


def test_a_triggered_decision_without_budgets_is_scored_by_the_shards_replica(
        running: RunningEngine) -> None:
    before = _scored_by_replicas(running)
    dave = customer()
    running.client.submit([event_dict(dave, "savings_withdrawal", now_ms(), amount=9000.0)])
    [treatment] = running.for_customer(dave)
    assert treatment["action_id"] == "advisor_call"
    assert _scored_by_replicas(running) == before + 1  # no arbitrate call was needed


def test_a_duplicate_event_takes_effect_once(running: RunningEngine) -> None:
    carol = customer()
    withdrawal = event_dict(carol, "savings_withdrawal", now_ms(), amount=7000.0)
    first = running.client.submit([withdrawal])
    second = running.client.submit([withdrawal])
    assert (first.accepted, first.duplicates) == (1, 0)
    assert (second.accepted, second.duplicates) == (0, 1)
    time.sleep(0.3)
    assert len(running.for_customer(carol)) == 1


def test_invalid_events_are_rejected_by_field_and_the_rest_accepted(
        running: RunningEngine) -> None:
    dave = customer()
    batch = [
        event_dict("", "savings_withdrawal", now_ms(), event_id="bad-customer", amount=1.0),
        event_dict(dave, "teleport", now_ms(), event_id="bad-type"),
        event_dict(dave, "savings_withdrawal", now_ms(), event_id="bad-attr", amount="lots"),
        event_dict(dave, "savings_withdrawal", now_ms(), amount=6000.0),
    ]
    result = running.client.submit(batch)
    assert result.accepted == 1
    fields = {r.event_id: r.field for r in result.rejected}
    assert fields == {"bad-customer": "customer_id", "bad-type": "type",
                      "bad-attr": "attributes.amount"}
    assert len(running.for_customer(dave)) == 1
    dead = {d["event_id"]: d for d in running.dead_letters()}
    assert {"bad-customer", "bad-type", "bad-attr"} <= set(dead)
    assert "unknown signal type 'teleport'" in dead["bad-type"]["reason"]
    serving, _ = running.client.health()
    assert serving


def test_invalid_events_sent_straight_to_their_shard_are_refused_there_by_field(
        running: RunningEngine) -> None:
    frank = customer()
    batch = [
        event_dict("", "savings_withdrawal", now_ms(), event_id="direct-no-customer",
                   amount=1.0),  # no shard to send it to: a router refuses it
        event_dict(frank, "teleport", now_ms(), event_id="direct-bad-type"),
        event_dict(frank, "savings_withdrawal", now_ms(), event_id="direct-bad-attr",
                   amount="lots"),
        event_dict(frank, "savings_withdrawal", now_ms(), amount=6000.0),
    ]

    async def go() -> Any:
        async with AsyncShushClient(running.engine.target,
                                    frames_target=running.engine.frames_target) as client:
            return await client.submit(batch)

    result = asyncio.run(go())
    assert result.accepted == 1
    assert {r.event_id: r.field for r in result.rejected} == {
        "direct-no-customer": "customer_id", "direct-bad-type": "type",
        "direct-bad-attr": "attributes.amount"}
    assert len(running.for_customer(frank)) == 1
    dead = {d["event_id"]: d for d in running.dead_letters()}
    assert {e: dead[e]["stage"] for e in ("direct-no-customer", "direct-bad-type",
                                          "direct-bad-attr")} == {
        "direct-no-customer": "router", "direct-bad-type": "shard edge",
        "direct-bad-attr": "shard edge"}
    assert "unknown signal type 'teleport'" in dead["direct-bad-type"]["reason"]


def test_inbound_decide_ranks_actions_without_firing(running: RunningEngine) -> None:
    erin = customer()
    running.client.submit([event_dict(erin, "profile_update", now_ms(), segment="mass"),
                           event_dict(erin, "savings_withdrawal", now_ms(), amount=5000.0)])
    running.for_customer(erin)
    decision = running.client.decide(erin)
    ranked = [r.action_id for r in decision.ranked]
    assert ranked[0] == decision.winner
    assert set(ranked) == {"advisor_call", "rate_offer", "card_upgrade"}
    web = running.client.decide(erin, channel="web")
    assert [r.action_id for r in web.ranked] == ["card_upgrade"]
    assert web.ranked[0].score == pytest.approx(0.5 * 1.0 * 10 * 1.0)
    time.sleep(0.2)
    assert len(running.for_customer(erin)) == 1  # the inbound answer fired nothing


def test_a_lever_change_reaches_an_inbound_decide_at_once(running: RunningEngine) -> None:
    """Decide is scored by the shard's replica of the arbitrator's scorer: a lever set through
    the engine must be in the very next answer, not after a refresh tick."""
    hal = customer()
    running.client.submit([event_dict(hal, "profile_update", now_ms(), segment="mass")])
    before = running.client.decide(hal, channel="web")
    assert before.ranked[0].score == pytest.approx(0.5 * 1.0 * 10 * 1.0)
    try:
        running.client.set_lever("card_upgrade", 3.0)
        after = running.client.decide(hal, channel="web")
        assert after.ranked[0].score == pytest.approx(0.5 * 1.0 * 10 * 3.0)
    finally:
        running.client.set_lever("card_upgrade", 1.0)


def test_explain_shows_the_decision(running: RunningEngine) -> None:
    gus = customer()
    running.client.submit([event_dict(gus, "profile_update", now_ms(), segment="student"),
                           event_dict(gus, "savings_withdrawal", now_ms(), amount=5000.0)])
    running.for_customer(gus)
    [decision] = running.client.explain(gus)
    assert decision["winner"] == "rate_offer"
    assert decision["removed"][0]["policy"] == "eligibility"


def test_stream_and_async_client(running: RunningEngine) -> None:
    streamed, awaited = customer(), customer()
    result = running.client.stream(
        [event_dict(streamed, "balance_update", now_ms() + i, balance=b)
         for i, b in enumerate([500.0, 50.0, 40.0])])
    assert result.accepted == 3
    assert [t["action_id"] for t in running.for_customer(streamed)] == ["low_balance_sms"]

    async def go() -> int:
        async with AsyncShushClient(running.engine.target) as client:
            submitted = await client.submit(
                [event_dict(awaited, "balance_update", now_ms(), balance=10.0)])
            return submitted.accepted

    assert asyncio.run(go()) == 1
    assert len(running.for_customer(awaited)) == 1


def test_the_frames_edge_takes_events_and_decides_at_their_shards(running: RunningEngine) -> None:
    frames_target = running.engine.frames_target
    assert frames_target is not None
    assert {h["frames_port"] for h in running.client.health()[1]["routers"]} == {
        int(frames_target.rsplit(":", 1)[1])}
    customers = [customer() for _ in range(4)]

    async def go() -> tuple[int, list[str]]:
        async with AsyncShushClient(running.engine.target, frames_target=frames_target,
                                    connections=4) as client:
            submitted = await client.submit(
                [event_dict(c, "balance_update", now_ms(), balance=10.0) for c in customers])
            decided = await asyncio.gather(*(client.decide(c, "web") for c in customers))
            return submitted.accepted, [d.customer_id for d in decided]

    def counts() -> tuple[int, int, int]:
        health = running.client.health()[1]
        return (sum(s["direct_calls"] for s in health["shards"]),
                sum(s["events_direct"] for s in health["shards"]),
                sum(r["received"] for r in health["routers"]))

    calls, events, routed = counts()
    assert asyncio.run(go()) == (4, customers)
    # each submit and Decide went straight to its customer's shard (Routes): no router
    after_calls, after_events, after_routed = counts()
    assert after_events == events + 4 and after_routed == routed
    assert 4 + 1 <= after_calls - calls <= 4 + 2  # the Decides, one submit per shard
    for c in customers:
        assert [t["action_id"] for t in running.for_customer(c)] == ["low_balance_sms"]


def test_unknown_lever_and_oversized_batch_get_clear_errors(running: RunningEngine) -> None:
    with pytest.raises(grpc.RpcError) as info:
        running.client.set_lever("no_such_action", 2.0)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "no_such_action" in info.value.details()
    client = running.client
    too_many = [event_dict(customer(), "balance_update", now_ms(), balance=1.0)
                for _ in range(10_001)]
    original = client.batch_size
    client.batch_size = 20_000
    try:
        with pytest.raises(grpc.RpcError) as info:
            client.submit(too_many)
    finally:
        client.batch_size = original
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at most 10000 events" in info.value.details()


def test_a_presented_inbound_offer_is_recorded_and_its_outcome_counts(
        running: RunningEngine) -> None:
    ivy = customer()
    running.client.submit([event_dict(ivy, "profile_update", now_ms(), segment="mass")])
    shown = running.client.decide(ivy, channel="web", present=True)
    assert shown.winner == "card_upgrade" and shown.treatment_id
    again = running.client.decide(ivy, channel="web")
    assert again.treatment_id is None  # asking without presenting records nothing
    result = running.client.record_outcomes([{"treatment_id": shown.treatment_id,
                                              "customer_id": ivy, "outcome": "accepted"}])
    assert result.accepted == 1
    time.sleep(0.3)
    assert running.for_customer(ivy, timeout_s=0.2) == []  # the caller showed it, not Shush
    [row] = [r for r in running.client.report() if r["action_id"] == "card_upgrade"]
    assert row["treated"] >= 1 and row["outcomes"].get("accepted", 0) >= 1


def test_a_checkpoint_saves_every_changed_customer_so_a_restart_replays_nothing(
        running: RunningEngine) -> None:
    alice, bob = customer(), customer()
    result = running.client.submit([
        event_dict(alice, "balance_update", now_ms(), balance=900.0),
        event_dict(bob, "balance_update", now_ms(), balance=700.0)])
    assert result.accepted == 2
    assert running.client.checkpoint() >= 2  # these two, and any other test's left unsaved
    _, detail = running.client.health()
    assert [shard["replay_backlog"] for shard in detail["shards"]] == [0] * len(
        detail["shards"])
