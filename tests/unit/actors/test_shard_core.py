"""The shard's body without Ray: apply, decide (with the real arbitration math), fire."""

from __future__ import annotations

import copy
import sqlite3
from pathlib import Path
from typing import Any

import msgpack
import pytest

from shush.actors.shard_core import ShardCore
from shush.actors.shard_persistence import ShardPersistence
from shush.adapters.channels.memory import MemoryChannel
from shush.adapters.stores import MemoryStateStore
from shush.engine import codec
from shush.engine.arbitration import ActionTable, arbitrate
from shush.engine.catalog import Catalog, load_catalog
from shush.engine.clock import ManualClock
from shush.engine.config import ShardConfig
from shush.engine.customer import CustomerState
from shush.engine.models import Treatment
from shush.engine.partitions import PartitionTable
from shush.engine.propensity import PropensityModel
from shush.engine.scorer import Scorer
from tests.factories import COMPETING_CATALOG, T0_MS, event, with_budgets, write_catalog


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    return load_catalog([write_catalog(tmp_path)])


class Harness:
    """A shard's core on a memory store and channel; given another harness's store (and
    channel), a new incarnation of that shard after a crash."""

    def __init__(self, catalog: Catalog, store: MemoryStateStore | None = None,
                 channel: MemoryChannel | None = None) -> None:
        self.channel = MemoryChannel() if channel is None else channel
        self.clock = ManualClock(T0_MS)
        self.store = MemoryStateStore() if store is None else store
        self.persistence = ShardPersistence(self.store, 0, PartitionTable.round_robin(16, 1),
                                            snapshot_interval_s=1.0)
        self.core = ShardCore(0, catalog, ShardConfig(), self.clock, self.channel, self.store,
                              self.persistence)
        self.table = ActionTable(catalog.actions)
        self.model = PropensityModel(self.table.ids, catalog.actions)

    def submit(self, *events: list[object]) -> list[list[object]]:
        acks = self.core.apply_events(events)
        self.decide()
        return acks

    def decide(self) -> None:
        for trigger, customers in self.core.take_awaiting().items():
            sets, removals = self.core.candidate_sets(customers, trigger=trigger)
            self.core.settle(arbitrate(sets, self.table, self.model.mean()), removals, trigger)

    @property
    def sent(self) -> list[Treatment]:
        return self.channel.sent


def test_large_withdrawal_fires_the_best_action_with_its_factors(catalog: Catalog) -> None:
    h = Harness(catalog)
    h.submit(event("alice", "profile_update", segment="affluent"),
             event("alice", "savings_withdrawal", amount=8000.0))
    [treatment] = h.sent
    assert treatment.action_id == "advisor_call"
    factors = treatment.payload["factors"]
    assert factors["p"] == pytest.approx(0.3)
    assert factors["c"] == pytest.approx(0.8)
    assert (factors["v"], factors["l"]) == (100, 1.0)
    assert factors["score"] == pytest.approx(0.3 * 0.8 * 100)
    assert treatment.idempotency_key.startswith("alice|advisor_call|large_withdrawal@")
    assert "ahead of rate_offer" in treatment.payload["why"][0]


def test_eligibility_removes_a_candidate_and_says_why(catalog: Catalog) -> None:
    h = Harness(catalog)
    h.submit(event("bob", "profile_update", segment="student"),
             event("bob", "savings_withdrawal", amount=6000.0))
    assert [t.action_id for t in h.sent] == ["rate_offer"]
    decision = h.core.recent_decisions("bob")[-1]
    assert [(r["action_id"], r["policy"]) for r in decision["removed"]] == [
        ("advisor_call", "eligibility")]
    assert any("advisor_call removed by eligibility" in r for r in decision["reasons"])


def test_duplicate_event_takes_effect_once(catalog: Catalog) -> None:
    h = Harness(catalog)
    withdrawal = event("carol", "savings_withdrawal", event_id="w1", amount=9000.0)
    assert h.submit(withdrawal) == [[codec.ACCEPTED, ""]]
    assert h.submit(withdrawal) == [[codec.DUPLICATE, "duplicate event_id"]]
    assert len(h.sent) == 1
    assert h.core.stats["duplicates"] == 1


def test_crossing_fires_once_and_rearms_past_the_reset(catalog: Catalog) -> None:
    h = Harness(catalog)
    balances = [500.0, 80.0, 60.0, 150.0, 90.0, 250.0, 40.0]
    for i, balance in enumerate(balances):
        h.clock.set(T0_MS + i * 1000)
        h.submit(event("dave", "balance_update", T0_MS + i * 1000, balance=balance))
    # 80 crosses; 60 and 90 stay below without a reset past 200; 40 crosses again after 250.
    assert [t.action_id for t in h.sent] == ["low_balance_sms", "low_balance_sms"]
    assert len({t.idempotency_key for t in h.sent}) == 2


def test_stale_moment_does_not_trigger(catalog: Catalog) -> None:
    h = Harness(catalog)
    h.clock.advance(5 * 3600 * 1000)  # low_balance lives 4 half-lives of 1 h
    h.submit(event("erin", "balance_update", T0_MS, balance=10.0))
    assert h.sent == []


def test_one_bad_event_does_not_stop_the_batch(catalog: Catalog) -> None:
    h = Harness(catalog)
    acks = h.submit(["x"], event("fay", "savings_withdrawal", amount=7000.0))
    assert acks[0][0] == codec.REJECTED and "could not apply" in acks[0][1]
    assert acks[1] == [codec.ACCEPTED, ""]
    assert len(h.sent) == 1
    # each malformed shape is refused on its own, whatever it does to the batch's activation
    for bad in (5, {"a": 1}, [1, 2, 3, 4, 5, 6], "a string", [None, ["unhashable"]]):
        acks = h.submit(bad, event("fay", "balance_update", balance=50.0))
        assert acks[0][0] == codec.REJECTED and acks[1] == [codec.ACCEPTED, ""], bad


def test_inbound_candidates_include_evergreen_actions_and_fire_nothing(catalog: Catalog) -> None:
    h = Harness(catalog)
    h.submit(event("gus", "profile_update", segment="mass"))
    sets, _ = h.core.candidate_sets(["gus"], inbound=True, channel="web")
    assert sets[0].action_ids == ("card_upgrade",) and sets[0].contexts == (1.0,)
    assert h.sent == []


def test_an_inbound_decide_gives_its_budget_back_unless_the_winner_is_presented(
        tmp_path: Path) -> None:
    from shush.policies.budgets import BudgetBook, apply_budgets

    h = Harness(load_catalog([write_catalog(tmp_path, with_budgets({"card_upgrade": 1}))]))
    h.submit(event("gus", "profile_update", segment="mass"),
             event("hal", "profile_update", segment="mass"))
    book = BudgetBook({"card_upgrade": 1}, "UTC")

    def decide(customer: str, present: bool) -> str | None:
        sets, _ = h.core.candidate_sets([customer], inbound=True, channel="web")
        [verdict], _ = apply_budgets(arbitrate(sets, h.table, h.model.mean()), book, T0_MS)
        presented = h.core.present(verdict) if present else None
        h.core.settle_inbound(verdict, presented is not None)
        for token, spent in h.core.take_learned()[1]:  # what the arbitrator is told
            if spent:
                book.commit(token, T0_MS)
            else:
                book.release(token)
        return verdict.winner

    # asking holds nothing: before, each Decide kept a unit reserved for a day
    assert [decide("gus", present=False) for _ in range(3)] == ["card_upgrade"] * 3
    assert decide("hal", present=True) == "card_upgrade"  # shown: the day's one unit is spent
    assert decide("gus", present=False) is None


def test_only_budgeted_actions_queue_budget_settlements(tmp_path: Path) -> None:
    h = Harness(load_catalog([write_catalog(tmp_path, with_budgets({"rate_offer": 5}))]))
    h.submit(event("ann", "savings_withdrawal", amount=9000.0),
             event("bob", "profile_update", segment="student"),
             event("bob", "savings_withdrawal", amount=9000.0))
    fired = {t.customer_id: t for t in h.sent}
    assert {t.action_id for t in fired.values()} == {"advisor_call", "rate_offer"}
    # ann's advisor call has no budget: nothing to settle; bob's rate offer spends its unit
    assert h.core.take_learned()[1] == [[fired["bob"].idempotency_key, True]]


def test_ledger_precedes_the_send_and_a_failed_send_stays_pending(catalog: Catalog) -> None:
    class Flaky(MemoryChannel):
        fail = True

        def send(self, treatment: Treatment) -> None:
            if self.fail:
                raise ConnectionError("smtp down")
            super().send(treatment)

    h = Harness(catalog)
    h.core.channel = channel = Flaky()
    h.submit(event("hal", "savings_withdrawal", amount=7000.0))
    [item] = h.store.pending_outbox(10, now_ms=h.clock.now_ms() + 10_000)
    assert item.attempts == 1 and "smtp down" in item.last_error
    assert channel.sent == [] and h.core.stats["send_failures"] == 1
    assert h.core.redispatch() == 0  # not before its retry time
    channel.fail = False
    h.clock.advance(10_000)
    assert h.core.redispatch() == 1
    assert [t.customer_id for t in channel.sent] == ["hal"]
    assert h.store.pending_outbox(10, now_ms=h.clock.now_ms() + 100_000) == []
    assert h.store.treatment_count() == 1


def test_a_pending_row_the_channel_took_already_is_marked_not_sent_again(
        catalog: Catalog) -> None:
    """A send the channel took while the shard did not mark it (killed in between, or a
    timeout after delivery) is found by its key: the redispatch marks it, sends nothing."""
    class TakesThenFails(MemoryChannel):
        def send(self, treatment: Treatment) -> None:
            super().send(treatment)
            raise TimeoutError("no answer")

    h = Harness(catalog)
    h.core.channel = channel = TakesThenFails()
    h.submit(event("hal", "savings_withdrawal", amount=7000.0))
    assert len(channel.sent) == 1
    h.clock.advance(10_000)
    assert h.core.redispatch() == 0  # nothing sent again...
    assert len(channel.sent) == 1 and h.core.stats["delivered_before"] == 1
    assert h.store.pending_outbox(10, now_ms=h.clock.now_ms() + 100_000) == []  # ...but closed


def test_sends_of_several_turns_are_marked_in_one_transaction_by_the_next_tick(
        catalog: Catalog) -> None:
    h = Harness(catalog)
    marks: list[list[str]] = []
    mark = h.store.mark_dispatched
    h.store.mark_dispatched = lambda keys, at_ms: marks.append(list(keys)) or mark(keys, at_ms)
    h.submit(event("ann", "savings_withdrawal", amount=7000.0))
    h.submit(event("bob", "savings_withdrawal", amount=7000.0))
    assert [t.customer_id for t in h.sent] == ["ann", "bob"] and marks == []
    later_ms = h.clock.now_ms() + 10**6
    assert len(h.store.pending_outbox(10, now_ms=later_ms)) == 2  # sent, not marked yet
    assert h.core.redispatch() == 0  # the tick: marks first, so nothing looks unsent
    assert marks == [[t.idempotency_key for t in h.sent]]
    assert h.store.pending_outbox(10, now_ms=later_ms) == [] and len(h.sent) == 2
    assert h.core.mark_sent() == 0 and len(marks) == 1  # nothing left: no transaction


def test_a_mark_that_fails_is_kept_for_the_next_tick(catalog: Catalog) -> None:
    h = Harness(catalog)
    h.submit(event("ann", "savings_withdrawal", amount=7000.0))
    mark = h.store.mark_dispatched

    def down(keys: list[str], at_ms: int) -> int:
        raise sqlite3.OperationalError("disk I/O error")

    h.store.mark_dispatched = down
    with pytest.raises(sqlite3.OperationalError):
        h.core.mark_sent()
    h.store.mark_dispatched = mark
    assert h.core.mark_sent() == 1 and h.core.unmarked == []


def test_sends_not_marked_before_a_crash_are_marked_after_it_not_sent_again(
        catalog: Catalog) -> None:
    first = Harness(catalog)
    first.submit(event("ann", "savings_withdrawal", amount=7000.0))
    assert len(first.sent) == 1 and first.core.unmarked  # killed before its tick
    second = Harness(catalog, first.store, first.channel)
    assert second.core.recover()["resent"] == 0
    assert len(first.channel.sent) == 1 and second.core.stats["delivered_before"] == 1
    assert first.store.pending_outbox(10, now_ms=second.clock.now_ms() + 10**6) == []


def test_a_presented_winner_left_pending_by_a_crash_is_never_sent(catalog: Catalog) -> None:
    """The caller showed it: after a kill before its mark, recovery marks it and the channel
    gets nothing (before, a redispatch would have sent what the caller had shown)."""
    first = Harness(catalog)
    first.submit(event("ivy", "profile_update", segment="affluent"))
    sets, _ = first.core.candidate_sets(["ivy"], inbound=True)
    [verdict] = arbitrate(sets, first.table, first.model.mean())
    presented = first.core.present(verdict)
    assert presented is not None and first.sent == [] and first.core.unmarked
    second = Harness(catalog, first.store, first.channel)
    assert second.core.recover()["resent"] == 0 and second.sent == []
    item = first.store.outbox_item(presented.idempotency_key)
    assert item is not None and item.status == "dispatched"


def test_a_key_already_in_the_ledger_is_never_sent_again(catalog: Catalog) -> None:
    first = Harness(catalog)
    first.submit(event("ida", "savings_withdrawal", event_id="w-ida", amount=7000.0))
    assert len(first.sent) == 1
    # A second incarnation with the same ledger and the same event (a replay, a resend):
    second = Harness(catalog)
    second.core.store = first.store
    second.submit(event("ida", "savings_withdrawal", event_id="w-ida", amount=7000.0))
    assert second.sent == []
    assert first.store.treatment_count() == 1


DAY_MS = 86_400_000


@pytest.fixture
def bank() -> Catalog:
    from shush.engine.catalog import bundled_catalog_path

    return load_catalog([bundled_catalog_path("bank")])


def test_absence_fires_on_the_engine_clock_once_and_rearms_after_a_deposit(
        bank: Catalog) -> None:
    h = Harness(bank)
    h.submit(event("joe", "profile_update", T0_MS, segment="mass", age=40),
             event("joe", "deposit", T0_MS, amount=100.0))
    h.clock.set(T0_MS + 29 * DAY_MS)
    h.core.tick()
    assert not h.core.awaiting_decision  # 29 days: nothing yet
    h.clock.set(T0_MS + 31 * DAY_MS)
    assert h.core.tick() == 1  # the customer never sent anything again: the timer fires
    h.decide()
    first = [t for t in h.sent if t.payload["moment"] == "no_recent_deposit"]
    assert len(first) == 1
    h.clock.set(T0_MS + 32 * DAY_MS)
    h.core.tick()
    assert not h.core.awaiting_decision  # once
    h.submit(event("joe", "deposit", T0_MS + 32 * DAY_MS, amount=50.0))
    assert h.core.timers.due_ms("joe") == T0_MS + 62 * DAY_MS  # re-armed from the deposit


def test_after_a_turn_the_wheel_holds_each_customers_next_due_time_or_nothing(
        bank: Catalog) -> None:
    h = Harness(bank)
    h.submit(event("joe", "profile_update", T0_MS, segment="mass"),
             event("ann", "balance_update", T0_MS, balance=500.0))
    joe = h.core.customers["joe"]
    assert h.core.timers.due_ms("joe") == joe.next_due_ms() is not None
    assert "ann" not in h.core.timers  # no timer, never scheduled
    h.submit(event("joe", "balance_update", T0_MS + 1, balance=400.0))  # moves no timer
    assert h.core.timers.due_ms("joe") == joe.next_due_ms() and not joe.due_moved
    h.submit(event("joe", "deposit", T0_MS + DAY_MS, amount=5.0))  # the wait starts again
    assert h.core.timers.due_ms("joe") == joe.next_due_ms() == T0_MS + 31 * DAY_MS
    # 31 days later an event's own time ends the wait: the absence fires, nothing is due
    h.submit(event("joe", "balance_update", T0_MS + 32 * DAY_MS, balance=300.0))
    assert joe.next_due_ms() is None and "joe" not in h.core.timers
    assert "no_recent_deposit" in {m.name for m in joe.moments}


def test_a_late_event_is_rejected_with_the_field_and_dead_lettered(bank: Catalog) -> None:
    h = Harness(bank)
    h.submit(event("kim", "deposit", T0_MS, amount=10.0))
    acks = h.submit(event("kim", "deposit", T0_MS - 2 * 3600 * 1000, event_id="late-1",
                          amount=10.0))
    assert acks[0][0] == codec.REJECTED and acks[0][2] == "occurred_at"
    [row] = h.store.read_dead_letters(10)
    assert row.field == "occurred_at" and "watermark" in row.reason
    assert h.core.stats["late"] == 1


def _five_a_second_apart(catalog: Catalog, balance: float) -> Harness:
    """Customers p0-p4, one event each a second apart, two of them allowed in memory."""
    h = Harness(catalog)
    h.core.config = ShardConfig(max_resident_customers=2, passivate_after_s=3600)
    for i in range(5):
        h.clock.set(T0_MS + i * 1000)
        h.submit(event(f"p{i}", "balance_update", T0_MS + i * 1000, event_id=f"b{i}",
                       balance=balance))
    return h


def test_passivated_customers_leave_memory_and_come_back_intact(catalog: Catalog) -> None:
    h = _five_a_second_apart(catalog, balance=50.0)
    assert len(h.sent) == 5  # each crossed below 100 once
    assert h.core.passivate() == 3
    assert list(h.core.customers) == ["p3", "p4"]
    # p0 comes back from its snapshot: its crossing stays disarmed and its dedup ids hold.
    h.submit(event("p0", "balance_update", T0_MS + 10_000, balance=40.0))
    acks = h.submit(event("p0", "balance_update", T0_MS + 11_000, event_id="b0", balance=50.0))
    assert acks == [[codec.DUPLICATE, "duplicate event_id"]]
    assert len(h.sent) == 5
    assert h.core.stats["activations"] == 1
    # Idle customers leave after passivate_after_s even under the resident bound.
    h.clock.set(T0_MS + 2 * 3600 * 1000)
    assert h.core.passivate() == 3 and not h.core.customers


def test_idleness_is_judged_by_the_last_turn_not_by_the_place_in_the_order(
        catalog: Catalog) -> None:
    h = _five_a_second_apart(catalog, balance=500.0)
    h.core.config = ShardConfig(max_resident_customers=100, passivate_after_s=3600)
    assert h.core.place_every_ms == 3600 * 1000 // 64  # from the config it was built with
    h.clock.set(T0_MS + 30_000)  # within place_every_ms of p0's place: it keeps it
    h.submit(event("p0", "balance_update", T0_MS + 30_000, balance=450.0))
    assert next(iter(h.core.customers)) == "p0"
    h.clock.set(T0_MS + 3600 * 1000 + 10_000)  # p1-p4 idle for an hour, p0 not yet
    assert h.core.passivate() == 4 and list(h.core.customers) == ["p0"]
    h.clock.set(T0_MS + 3600 * 1000 + 30_001)
    assert h.core.passivate() == 1 and not h.core.customers


def test_over_the_bound_the_least_recently_placed_leave_first(catalog: Catalog) -> None:
    h = _five_a_second_apart(catalog, balance=500.0)
    h.clock.set(T0_MS + 100_000)  # more than place_every_ms after p0's place: it moves last
    h.submit(event("p0", "balance_update", T0_MS + 100_000, balance=450.0))
    assert list(h.core.customers) == ["p1", "p2", "p3", "p4", "p0"]
    assert h.core.passivate() == 3 and list(h.core.customers) == ["p4", "p0"]


def test_passivation_snapshots_only_where_a_leaving_customer_changed(catalog: Catalog) -> None:
    h = _five_a_second_apart(catalog, balance=500.0)
    h.persistence.snapshot(h.core.customers.get, h.clock.now_ms())  # all five saved
    saved = {row.customer_id: row.data for row in h.store.load_snapshots(range(16))}
    h.clock.set(T0_MS + 10_000)
    h.submit(event("p4", "balance_update", T0_MS + 10_000, balance=450.0))  # p4 changes
    h.submit(event("p3", "balance_update", T0_MS + 10_000, balance=440.0))  # and p3
    written = []
    h.store.save_snapshots = lambda *args, **kw: written.append(args)  # type: ignore[method-assign]
    # p0-p2 leave (least recently active) with their snapshots current: nothing is written,
    # and p3, p4 stay changed, to be saved on their partitions' turn.
    assert h.core.passivate() == 3 and set(h.core.customers) == {"p3", "p4"}
    assert written == []
    assert {c for ids in h.persistence.dirty.values() for c in ids} == {"p3", "p4"}
    assert {row.customer_id: row.data for row in h.store.load_snapshots(range(16))} == saved
    # A changed customer that leaves is saved first (with its partition's others).
    del h.store.save_snapshots
    h.clock.set(T0_MS + 3 * 3600 * 1000)
    assert h.core.passivate() == 2 and not h.core.customers and not h.persistence.dirty
    assert h.core.customer("p3").last["balance_update"]["balance"] == 440.0


def test_a_turns_passivated_customers_come_back_in_one_store_read(catalog: Catalog) -> None:
    h = _five_a_second_apart(catalog, balance=500.0)
    h.clock.set(T0_MS + 3 * 3600 * 1000)
    assert h.core.passivate() == 5 and not h.core.customers
    reads: list[list[str]] = []
    load_snapshots_of = h.store.load_snapshots_of
    h.store.load_snapshots_of = (  # type: ignore[method-assign]
        lambda ids: reads.append(list(ids)) or load_snapshots_of(ids))
    acks = h.submit(*(event(f"p{i}", "balance_update", T0_MS + 4 * 3600 * 1000 + i,
                            balance=400.0) for i in (0, 1, 2, 0)))
    assert [a[0] for a in acks] == [codec.ACCEPTED] * 4
    assert reads == [["p0", "p1", "p2"]]  # each once, in one read
    assert h.core.stats["activations"] == 3
    assert h.core.customers["p1"].last["balance_update"]["balance"] == 400.0


def test_a_send_that_keeps_failing_goes_to_the_dead_letter_record(catalog: Catalog) -> None:
    class Down(MemoryChannel):
        def send(self, treatment: Treatment) -> None:
            raise ConnectionError("smtp down")

    h = Harness(catalog)
    h.core.config = ShardConfig(max_send_attempts=3)
    h.core.channel = Down()
    h.submit(event("lou", "savings_withdrawal", amount=7000.0))
    for _ in range(4):
        h.clock.advance(120_000)
        h.core.redispatch()
    [dead] = [r for r in h.store.read_dead_letters(10) if r.kind == "treatment"]
    assert dead.field == "channel" and "3 sends failed" in dead.reason
    assert h.store.pending_outbox(10, now_ms=h.clock.now_ms() + 10**9) == []


def test_timers_come_back_from_the_store_after_a_restart(bank: Catalog) -> None:
    first = Harness(bank)
    first.submit(event("max", "profile_update", T0_MS, segment="mass", age=30),
                 event("max", "deposit", T0_MS, amount=100.0))
    first.persistence.snapshot(first.core.customers.get, T0_MS)
    # A new incarnation on the same store: nothing arrives for max after the restart.
    second = Harness(bank, first.store)
    assert second.core.recover()["customers"] == 1
    second.clock.set(T0_MS + 31 * DAY_MS)
    assert second.core.tick() == 1
    second.decide()
    assert [t.payload["moment"] for t in second.sent] == ["no_recent_deposit"]


def test_a_customer_acknowledged_but_not_yet_decided_is_decided_after_a_crash(
        catalog: Catalog) -> None:
    first = Harness(catalog)
    first.core.apply_events([event("ned", "savings_withdrawal", amount=9000.0)])  # no decision
    first.persistence.snapshot(first.core.customers.get, T0_MS)
    second = Harness(catalog, first.store)
    second.core.recover()
    assert second.core.awaiting_decision == {"ned": "triggered"}
    second.decide()
    assert [t.customer_id for t in second.sent] == ["ned"]
    assert not second.core.customers["ned"].undecided


def test_each_winner_of_a_decision_fires_once(tmp_path: Path) -> None:
    from tests.factories import COMPETING_CATALOG

    data = {**COMPETING_CATALOG, "actions": [
        *COMPETING_CATALOG["actions"],
        {"id": "web_banner", "kind": "marketing", "channel": "web", "value": 5,
         "moments": ["large_withdrawal"], "compete_per_channel": True}]}
    h = Harness(load_catalog([write_catalog(tmp_path, data)]))
    h.submit(event("oli", "savings_withdrawal", amount=9000.0))
    assert sorted(t.action_id for t in h.sent) == ["advisor_call", "web_banner"]
    decision = h.core.recent_decisions("oli")[-1]
    assert (decision["winner"], decision["also"]) == ("advisor_call", ["web_banner"])
    assert any("web_banner wins its own channel competition" in r for r in decision["reasons"])


def _scorer(catalog: Catalog) -> Scorer:
    return Scorer(catalog.actions, prior_strength=2.0, feature_cardinalities=(),
                  action_features={}, explore=False)


def test_the_replica_scores_a_decide_as_the_arbitrator_would(catalog: Catalog) -> None:
    master = _scorer(catalog)
    master.set_lever("card_upgrade", 3.0)
    master.learn([["card_upgrade", 0, True], ["card_upgrade", 0, True]])
    h = Harness(catalog)
    h.core.scorer = _scorer(catalog)
    h.submit(event("gus", "profile_update", segment="mass"))
    sets, _ = h.core.candidate_sets(["gus"], inbound=True)
    assert h.core.score_here(sets) is None  # no replica yet: the arbitrator answers
    h.core.load_replica(msgpack.packb({"stamp": "a/2", "scorer": master.to_replica()}))
    assert h.core.replica_stamp == "a/2"
    assert h.core.score_here(sets) == master.score(sets)
    assert h.core.stats["scored_here"] == 1


def test_a_candidate_with_a_budget_is_left_to_the_arbitrator(catalog: Catalog) -> None:
    h = Harness(catalog)
    h.core.scorer = _scorer(catalog)
    h.core.load_replica(msgpack.packb({"stamp": "a/0",
                                       "scorer": _scorer(catalog).to_replica()}))
    h.submit(event("gus", "profile_update", segment="mass"))
    sets, _ = h.core.candidate_sets(["gus"], inbound=True, channel="web")
    h.core.budgeted = frozenset({"card_upgrade"})  # one unit a day: the book is the arbitrator's
    assert h.core.score_here(sets) is None
    h.core.budgeted = frozenset({"rate_offer"})  # not among this Decide's candidates
    assert h.core.score_here(sets) is not None


def test_a_batch_is_journaled_as_it_came_and_replayed_after_a_crash(catalog: Catalog) -> None:
    """The journal takes the batch's own bytes when nothing in it is malformed; a batch with
    a malformed event is packed again without it. A new incarnation replays both."""
    from shush.engine import codec

    first = Harness(catalog)
    batch = [event("ned", "savings_withdrawal", amount=9000.0),
             event("ada", "savings_withdrawal", amount=5.0)]
    first.core.journal(*codec.unpack_events(codec.pack(codec.EVENTS, batch)))
    later = [event("bob", "savings_withdrawal", amount=9000.0), ["not", "an", "event"]]
    first.core.journal(later, codec.pack(codec.EVENTS, later))  # bytes that do not match
    second = Harness(catalog, first.store)
    assert second.core.recover()["replayed"] == 3
    assert set(second.core.customers) == {"ned", "ada", "bob"}
    assert second.store.read_dead_letters(10) == []  # the malformed one never reached it


def test_a_decision_builds_the_policy_namespace_once_for_all_its_readers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Eligibility, a service-issue rule and context features all read the namespace."""
    data = copy.deepcopy(COMPETING_CATALOG)
    data["policies"] = {
        "contact": {"service_issue_when": "'low_balance' in moments"},
        "features": [{"name": "segment", "expression": "profile.segment",
                      "categories": ["student", "affluent"]}],
        "actions": {"advisor_call": {"context_features": ["segment"]}}}
    h = Harness(load_catalog([write_catalog(tmp_path, data)]))
    built: list[str] = []
    namespace = CustomerState.namespace

    def counted(self: CustomerState, now_ms: int, live: Any = None) -> dict[str, Any]:
        built.append(self.customer_id)
        return namespace(self, now_ms, live)

    monkeypatch.setattr(CustomerState, "namespace", counted)
    h.submit(event("alice", "profile_update", segment="affluent"),
             event("alice", "savings_withdrawal", amount=9000.0))
    assert [t.action_id for t in h.sent] == ["advisor_call"]
    sets, _ = h.core.candidate_sets(["alice"])  # what the decision saw, again
    assert sets[0].features == (2,)  # affluent: the second category (0: none of them)
    # the decision: once for eligibility, the chain and features together, then at settling
    # (events may have come in while it was scored) for the send plan and the winner's
    # feature bin; the second call above: once (three times each before)
    assert built == ["alice"] * 4
