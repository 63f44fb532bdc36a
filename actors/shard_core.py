"""The body of a shard, without Ray: hosts customer actors and runs their turns.

A batch of events is journaled, then applied customer by customer, in order; customers that
got new moments are decided (candidates here, scoring in the arbitration actor), and each winner
is fired individually, once per idempotency key: the ledger row (and its outbox entry) is
written before the channel send, and a key already in the ledger is never sent again.
``ShardActor`` is the thin Ray shell around this.
"""

from __future__ import annotations

import hashlib
import logging
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

import msgpack
import numpy as np

from ..engine import codec
from ..engine.arbitration import CandidateSet, Verdict, explain
from ..engine.catalog import Catalog
from ..engine.clock import Clock
from ..engine.config import ArbitrationConfig, ShardConfig
from ..engine.customer import CustomerState, LateEventError
from ..engine.errors import EventRejected
from ..engine.models import Candidate, Decision, Moment, Removal, Treatment
from ..engine.outcomes import OutcomeTracker, Resolution
from ..engine.packing import packb
from ..engine.scorer import Scorer
from ..engine.signals import SignalRecord
from ..engine.store import DeadLetterRow, DecisionRow, StateStore, TreatmentRow
from ..engine.timers import TimerWheel
from ..policies.candidates import EligibilityPolicy, build_candidates, idempotency_key
from ..policies.chain import CustomerContext, PolicyChain
from ..policies.features import FeatureBinner
from ..policies.policy_config import catalog_policies
from .ports import TreatmentChannel
from .scoring import scorer_for
from .shard_always_on import ShardAlwaysOn
from .shard_persistence import ShardPersistence

log = logging.getLogger(__name__)

Trigger = str  # "triggered" | "inbound" | "sweep" | "emergency"
TRIGGER_RANK = {"triggered": 0, "sweep": 1, "emergency": 2}
# how finely the shard's order of residents follows their turns: a customer moves to the end
# at most once per this fraction of ``passivate_after_s`` (see ``ShardCore.customers``)
PLACES_PER_IDLE = 64


def _presented(treatment: Treatment) -> bool:
    """A treatment an inbound caller showed (``present``): in the ledger, never sent by Shush."""
    return bool(treatment.payload.get("presented_by_caller"))


def _winning(verdict: Verdict) -> Candidate:
    """The main winner's candidate (the best-ranked one when there is no winner)."""
    return next((c for c in verdict.candidates if c.action_id == verdict.winner),
                verdict.candidates[0])


class ShardCore:
    def __init__(self, index: int, catalog: Catalog, config: ShardConfig, clock: Clock,
                 channel: TreatmentChannel, store: StateStore,
                 persistence: ShardPersistence | None = None,
                 always_on: ShardAlwaysOn | None = None,
                 scoring: ArbitrationConfig | None = None) -> None:
        self.index = index
        self.catalog = catalog
        self.config = config
        self.clock = clock
        self.channel = channel
        self.store = store
        self.persistence = persistence
        self.eligibility = EligibilityPolicy(catalog)
        self.policy = catalog_policies(catalog)
        self.chain = PolicyChain(catalog.actions, self.policy)
        self.binner = FeatureBinner(self.policy.features)
        self.cardinalities = tuple(spec.cardinality for spec in self.policy.features)
        self.tracker = OutcomeTracker(self.policy.outcomes)
        # a replica of the arbitrator's scorer, for inbound Decides and small decision turns
        self.scorer: Scorer | None = (scorer_for(catalog, self.policy, scoring)
                                      if scoring is not None else None)
        self.replica_stamp = ""  # the master state it holds ("" until the first one arrives)
        self.budgeted = frozenset(self.policy.budget_limits())
        self.resolutions: deque[Resolution] = deque(maxlen=100_000)
        self.learned: list[list[Any]] = []
        self.unmarked: list[str] = []  # keys sent or presented, their outbox rows still pending
        self.budget_settled: list[list[Any]] = []
        # resident customers in the order they were placed, least recently first. A turn
        # moves its customer to the end (a pop and an insert) only when it was placed more
        # than ``place_every_ms`` ago: moving it on every turn, with its time in a dict of its
        # own, was 5 % of applying an event (30,000 customers). So a customer's place is at
        # most that much older than its last turn (``active_ms``), which is what idleness is
        # judged by.
        self.customers: dict[str, CustomerState] = {}
        self.place_every_ms = max(1, int(config.passivate_after_s * 1000) // PLACES_PER_IDLE)
        self.timers = TimerWheel()
        self.awaiting_decision: dict[str, Trigger] = {}  # customer -> why it is decided
        self.bypass_caps: set[str] = set()  # emergency-run customers the operator exempted
        self.always_on = always_on
        self.stats = {"events": 0, "duplicates": 0, "rejected": 0, "late": 0, "moments": 0,
                      "timer_moments": 0, "decisions": 0, "treatments": 0, "send_failures": 0,
                      "holdouts": 0, "deferred": 0, "dropped_at_send": 0,
                      "activations": 0, "passivations": 0, "scored_here": 0,
                      "delivered_before": 0}

    def customer(self, customer_id: str, now_ms: int | None = None) -> CustomerState:
        """The customer, resident or activated from the store, or new. ``now_ms``: the
        engine's time, when the caller has it at hand (a turn of events)."""
        state = self.find(customer_id, now_ms)
        if state is None:
            state = CustomerState(customer_id, dedup_ids=self.config.dedup_ids_per_customer)
            self._reside(state)
        return state

    def find(self, customer_id: str, now_ms: int | None = None) -> CustomerState | None:
        """A known customer (activated from its snapshot if passivated), else ``None``."""
        state = self.customers.get(customer_id)
        if state is not None:
            self._touch(state, self.clock.now_ms() if now_ms is None else now_ms)
            return state
        self._activate((customer_id,))
        return self.customers.get(customer_id)

    def _touch(self, state: CustomerState, now_ms: int) -> None:
        """A resident customer's turn at ``now_ms``: active now, and moved to the end of the
        passivation order when it was last moved over ``place_every_ms`` ago."""
        state.active_ms = now_ms
        if now_ms - state.placed_ms > self.place_every_ms:
            del self.customers[state.customer_id]
            self.customers[state.customer_id] = state
            state.placed_ms = now_ms

    def _activate(self, customer_ids: Iterable[str]) -> None:
        """Bring back the passivated customers among ``customer_ids`` (none of them in
        memory) in one store read: a turn's activations, or ``find``'s one."""
        if self.persistence is None:
            return
        missing = [c for c in dict.fromkeys(customer_ids) if self._known(c)]
        if missing:
            for state in self.persistence.load_customers_of(missing):
                self.stats["activations"] += 1
                self._reside(state)

    def _known(self, customer_id: str) -> bool:
        if self.always_on is not None:  # its columns index every customer the shard has seen
            return self.always_on.hot.row_of(customer_id) is not None
        return True

    def _reside(self, state: CustomerState) -> None:
        self.customers[state.customer_id] = state
        state.active_ms = state.placed_ms = self.clock.now_ms()

    def passivate(self, now_ms: int | None = None) -> int:
        """Drop from memory the customers idle for ``passivate_after_s`` and, least recently
        placed first (within ``place_every_ms`` of least recently active), those over
        ``max_resident_customers``; those changed since their last snapshot are snapshotted
        first."""
        if self.persistence is None:
            return 0
        now_ms = self.clock.now_ms() if now_ms is None else now_ms
        idle_before = now_ms - int(self.config.passivate_after_s * 1000)
        leaving = []
        excess = len(self.customers) - self.config.max_resident_customers
        for customer_id, state in self.customers.items():  # least recently placed first
            if excess <= len(leaving) and state.placed_ms > idle_before:
                break  # it and those after it had a turn since idle_before: none is idle
            if customer_id in self.awaiting_decision:
                continue
            if state.active_ms <= idle_before or excess > len(leaving):
                leaving.append(customer_id)
        if not leaving:
            return 0
        # Only the partitions where one of them changed since its snapshot: a customer whose
        # snapshot is current just goes. (Over the resident bound, the least recently active
        # leave a few at a time, one in most partitions: snapshotting all of theirs saved
        # every changed customer of the shard at each tick, about one snapshot per event.)
        unsaved = self.persistence.unsaved_partitions(leaving)
        if unsaved:
            self.persistence.snapshot(self.customers.get, now_ms, unsaved)
        for customer_id in leaving:
            del self.customers[customer_id]
        self.stats["passivations"] += len(leaving)
        return len(leaving)

    # -- recovery -------------------------------------------------------------------------
    def recover(self) -> dict[str, int]:
        """Reload customers from snapshots, replay the journal, resend the pending outbox."""
        if self.persistence is None:
            return {}
        loaded = 0
        for state in self.persistence.load_customers():
            loaded += 1
            self._reside(state)
            self._schedule(state)  # durable reminders
            if state.undecided:  # its moments came before the crash; its decision did not
                self._await(state.customer_id, "triggered")
            if self.always_on is not None:
                self.always_on.observe([state])
            if len(self.customers) > self.config.max_resident_customers:
                del self.customers[next(iter(self.customers))]  # its snapshot is current
        replayed = list(self.persistence.journaled_events())
        self.apply_events(replayed, journal=False)
        resent = self.redispatch()
        return {"customers": loaded, "replayed": len(replayed), "resent": resent}

    # -- the turn of each customer --------------------------------------------------------
    def journal(self, events: list[Any], packed: bytes | None = None,
                partitions: dict[int, int] | None = None) -> None:
        """Write events ahead to the journal (one transaction); malformed ones are left out
        (``apply_events`` rejects them). ``packed``: the events as msgpack bytes, when the
        caller has them (the batch as it came), and ``partitions``: their count per partition,
        when the caller has counted; both are taken if no event is left out."""
        if self.persistence is not None:
            kept = [e for e in events if isinstance(e, list) and len(e) == 6
                    and isinstance(e[1], str)]
            whole = len(kept) == len(events)
            self.persistence.journal(kept, packed if whole else None,
                                     partitions if whole else None)

    def apply_events(self, events: Iterable[Any], *, journal: bool = True) -> list[list[Any]]:
        """Journal, then apply wire events in order; return one ``[status, reason]`` per event.

        One bad event is rejected on its own; it never stops the batch or the shard.
        """
        events = list(events)
        if journal:
            self.journal(events)
        try:  # the set's work is done in C
            ids = {e[1] for e in events}
        except (TypeError, LookupError):  # a malformed event (rejected below), e.g. not a list
            ids = {e[1] for e in events if type(e) is list and len(e) == 6
                   and type(e[1]) is str}
        now_ms = self.clock.now_ms()  # when this turn's customers were last active
        # the customers of this batch, each looked up once in the shard's table of them (a
        # lookup there misses the cache: two per customer were 5 % of a saturated shard); one
        # whose every event is refused below still counts as changed: a snapshot it did not
        # need, where keeping the others apart cost 1.5 % more instructions per event
        batch: dict[str, CustomerState] = {}
        absent: list[str] = []  # those not in memory: passivated, or new
        resident = self.customers.get
        for customer_id in ids:
            state = resident(customer_id)
            if state is not None:
                self._touch(state, now_ms)
                batch[customer_id] = state
            elif type(customer_id) is str:
                absent.append(customer_id)
        self._activate(sorted(absent))  # (few: sorting is cheap)
        acks: list[list[Any]] = []
        profiled: set[str] = set()  # those of them whose profile an event may change
        earliest: dict[str, int] = {}  # the earliest event each of them took (hot columns)
        catalog = self.catalog
        signals, profile_signals = catalog.signals, catalog.profile_signals
        observe = self.clock.observe if self.clock.follows_events else None  # else a no-op
        accepted = moments_made = 0  # added to the stats once, after the loop
        for event in events:
            try:
                signal = SignalRecord(*event)
                if signal.type not in signals:
                    raise ValueError(f"unknown signal type {signal.type!r}")
                if signal.type in profile_signals:
                    profiled.add(signal.customer_id)
                customer = batch.get(signal.customer_id)
                if customer is None:
                    customer = batch[signal.customer_id] = self.customer(signal.customer_id,
                                                                         now_ms)
                moments = customer.apply(signal, catalog)
            except EventRejected as exc:  # e.g. later than the customer's watermark
                self.stats["late" if isinstance(exc, LateEventError) else "rejected"] += 1
                acks.append([codec.REJECTED, exc.reason, exc.field])
                self.dead_letter(event, exc)
                continue
            except Exception as exc:  # loop boundary: one message must not kill the shard
                log.exception("shard %d could not apply an event", self.index)
                self.stats["rejected"] += 1
                acks.append([codec.REJECTED, f"shard could not apply the event: {exc}"])
                continue
            if moments is None:
                self.stats["duplicates"] += 1
                acks.append([codec.DUPLICATE, "duplicate event_id"])
                continue
            accepted += 1
            t = signal.occurred_at_ms
            if observe is not None:
                observe(t)
            first = earliest.get(signal.customer_id)
            if first is None or t < first:
                earliest[signal.customer_id] = t
            if moments:
                moments_made += len(moments)
                self._await(signal.customer_id, "triggered")
            acks.append([codec.ACCEPTED, ""])
        self.stats["events"] += accepted
        self.stats["moments"] += moments_made
        for customer in batch.values():
            if customer.due_moved:  # most turns move no timer (a 30-day absence's stays put)
                self._schedule(customer)
        if self.persistence is not None:
            self.persistence.touched_customers(batch.values())
        if self.always_on is not None:
            self.always_on.observe(batch.values(), profiled, earliest)
        return acks

    def _schedule(self, customer: CustomerState) -> None:
        """Put the customer's next due time (a timer, a deferred send) on the wheel."""
        customer.due_moved = False
        self.timers.schedule(customer.customer_id, customer.next_due_ms())

    def _await(self, customer_id: str, trigger: Trigger) -> None:
        """Queue a decision; an emergency or sweep reason outranks a plain trigger."""
        current = self.awaiting_decision.get(customer_id)
        if current is None or TRIGGER_RANK[trigger] > TRIGGER_RANK[current]:
            self.awaiting_decision[customer_id] = trigger
        state = self.customers.get(customer_id)
        if state is not None:
            state.undecided = True

    def inject(self, moment: Moment, trigger: Trigger, *, bypass_caps: bool = False) -> bool:
        """Give a customer a moment from a sweep or a run; ``False`` if it had it already."""
        customer = self.customer(moment.customer_id)
        if not customer.inject(moment, self.catalog):
            return False
        self._await(moment.customer_id, trigger)
        if bypass_caps:
            self.bypass_caps.add(moment.customer_id)
        if self.persistence is not None:
            self.persistence.touched([moment.customer_id])
        return True

    def always_on_step(self, now_ms: int | None = None) -> int:
        """One sweep chunk and each run's share of injections; return the moments given."""
        if self.always_on is None:
            return 0
        now_ms = self.clock.now_ms() if now_ms is None else now_ms
        given = sum(self.inject(m, "sweep") for m in self.always_on.sweep_step(now_ms))
        for moment, bypass in self.always_on.run_step(now_ms, self.customer):
            given += self.inject(moment, "emergency", bypass_caps=bypass)
        return given

    def tick(self, now_ms: int | None = None) -> int:
        """Run what is due by ``now_ms`` (engine clock): detector timers (their moments await
        a decision), deferred sends (re-checked, then fired) and response windows (no answer
        counts as ignored). Return how many customers had a timer."""
        now_ms = self.clock.now_ms() if now_ms is None else now_ms
        due = self.timers.pop_due(now_ms)
        sends: list[Treatment] = []
        for customer_id in due:
            customer = self.find(customer_id)  # a passivated customer wakes for its timer
            if customer is None:
                continue
            moments = customer.on_time(now_ms, self.catalog)
            sends.extend(self.due_sends(customer, now_ms))
            self._schedule(customer)
            if moments:
                self.stats["timer_moments"] += len(moments)
                self._await(customer_id, "triggered")
        if due and self.persistence is not None:
            self.persistence.touched(due)
        self._fire_all(sends, now_ms)
        for resolution in self.tracker.expire(now_ms):
            self._resolved(resolution)
        return len(due)

    def dead_letter(self, event: Any, exc: EventRejected, stage: str = "shard") -> None:
        """Keep a refused event in the store, with why and where it was refused."""
        self.store.dead_letter([DeadLetterRow(
            kind="event", reason=exc.reason, field=exc.field,
            payload=packb({"stage": stage, "event_id": exc.event_id, "reason": exc.reason,
                           "event": event}), at_ms=self.clock.now_ms())])

    def _context(self, customer: CustomerState, now_ms: int, trigger: Trigger,
                 bypass: bool = False, namespace: dict[str, Any] | None = None
                 ) -> CustomerContext:
        if namespace is None and self.chain.needs_namespace:
            namespace = customer.namespace(now_ms)
        return CustomerContext(customer.customer_id, now_ms, customer.profile,
                               customer.contacts, trigger=trigger, emergency_bypass=bypass,
                               namespace=namespace)

    def _features(self, customer: CustomerState, now_ms: int,
                  namespace: dict[str, Any] | None = None) -> tuple[int, ...]:
        """The customer's context-feature bins (empty when no feature is declared)."""
        if not self.cardinalities:
            return ()
        return self.binner.bins(customer.namespace(now_ms) if namespace is None else namespace)

    def candidate_sets(self, customer_ids: Iterable[str], *, inbound: bool = False,
                       channel: str | None = None, trigger: Trigger = "triggered",
                       bypass: bool = False,
                       ) -> tuple[list[CandidateSet], dict[str, list[Removal]]]:
        """Applicable, eligible candidates that the contact policy allows, per customer."""
        now_ms = self.clock.now_ms()
        sets: list[CandidateSet] = []
        removals: dict[str, list[Removal]] = {}
        # the policy namespace, built once for all its readers when more than eligibility
        # reads it (eligibility alone builds it from the moments it has already taken)
        shared = self.chain.needs_namespace or bool(self.cardinalities)
        for customer_id in customer_ids:
            customer = self.customer(customer_id, now_ms)
            namespace = customer.namespace(now_ms) if shared else None
            cset, removed = build_candidates(customer, self.catalog, self.eligibility, now_ms,
                                             inbound=inbound, channel=channel,
                                             namespace=namespace)
            ctx = self._context(customer, now_ms, "inbound" if inbound else trigger,
                                bypass or customer_id in self.bypass_caps, namespace)
            self.bypass_caps.discard(customer_id)
            cset, refused = self.chain.run(cset, ctx)
            features = self._features(customer, now_ms, namespace)
            sets.append(CandidateSet(cset.customer_id, cset.action_ids, cset.contexts,
                                     cset.moment_ids, features) if features else cset)
            removals[customer_id] = removed + refused
        return sets, removals

    def load_replica(self, reply: bytes) -> None:
        """The arbitrator's levers and learned counts (its ``replica`` reply)."""
        if self.scorer is None:
            return
        data = msgpack.unpackb(reply, raw=False, strict_map_key=False)
        self.scorer.load_replica(data["scorer"])
        self.replica_stamp = data["stamp"]

    def score_here(self, sets: list[CandidateSet]) -> list[Verdict] | None:
        """Verdicts from the replica, when it can answer alone: it holds the master's state,
        and no candidate has a volume budget (a reservation needs the arbitrator's one book).
        ``None``: ask the arbitrator."""
        if self.scorer is None or not self.replica_stamp:
            return None
        if self.budgeted and any(a in self.budgeted for s in sets for a in s.action_ids):
            return None
        self.stats["scored_here"] += len(sets)
        return self.scorer.score(sets)

    def take_awaiting(self) -> dict[Trigger, list[str]]:
        """The customers to decide now, grouped by why."""
        groups: dict[Trigger, list[str]] = {}
        for customer_id in sorted(self.awaiting_decision):
            groups.setdefault(self.awaiting_decision[customer_id], []).append(customer_id)
        self.awaiting_decision.clear()
        return groups

    def settle(self, verdicts: Iterable[Verdict], removals: dict[str, list[Removal]],
               trigger: Trigger = "triggered") -> list[Treatment]:
        """Record each decision; hold out, defer (quiet hours) or fire each winner."""
        now_ms = self.clock.now_ms()
        audit: list[DecisionRow] = []
        ready: list[Treatment] = []
        for verdict in verdicts:
            customer = self.customer(verdict.customer_id, now_ms)
            customer.undecided = False
            removed = removals.get(verdict.customer_id, [])
            if not verdict.candidates and not removed:
                continue
            reasons = self._reasons(verdict, removed)
            outcomes: list[tuple[Treatment, str]] = []  # each winner's treatment, and its fate
            for winner in (verdict.winner, *verdict.also) if verdict.winner else ():
                candidate = next(c for c in verdict.candidates if c.action_id == winner)
                treatment = self._plan(customer, candidate, now_ms)
                if treatment is None:
                    continue
                if self.chain.holdout(customer.customer_id, winner, now_ms):
                    reasons.append(f"{winner}: customer in the holdout (control) group: "
                                   "not sent")
                    outcomes.append((treatment, "holdout"))
                    continue
                plan = self.chain.send_plan(winner, self._context(customer, now_ms, trigger))
                if not plan.send_now:
                    reasons.append(plan.reason)
                    treatment.payload["send_at_ms"] = plan.at_ms
                    outcomes.append((treatment, "deferred"))
                else:
                    outcomes.append((treatment, "now"))
            decision = Decision(
                customer_id=verdict.customer_id, decided_at_ms=now_ms, trigger=trigger,
                candidates=verdict.candidates, removed=tuple(removed), winner=verdict.winner,
                also=verdict.also, reasons=tuple(reasons))
            audit.append(DecisionRow(customer.customer_id, now_ms, packb(decision.to_wire())))
            self.stats["decisions"] += 1
            for treatment, fate in outcomes:
                treatment.payload["why"] = list(reasons)
                if fate == "holdout":
                    self.stats["holdouts"] += 1
                    self._track(customer, treatment, now_ms, holdout=True)
                    self._settle_budget(treatment.action_id, treatment.idempotency_key, False)
                elif fate == "deferred":
                    self.stats["deferred"] += 1
                    customer.defer(treatment.idempotency_key,
                                   int(treatment.payload.pop("send_at_ms")),
                                   treatment.to_wire())
                    self._schedule(customer)
                else:
                    ready.append(treatment)
        return self._fire_all(ready, now_ms, audit)

    def _fire_all(self, treatments: list[Treatment], now_ms: int,
                  audit: Sequence[DecisionRow] = ()) -> list[Treatment]:
        """Ledger and decision audit first (one transaction), then each send on its own."""
        if not treatments:
            if audit:
                self.store.append_decisions(audit)
            return []
        if self.persistence is not None:  # treated keys and contacts live in customer state
            self.persistence.touched(t.customer_id for t in treatments)
        fresh = self.store.record_treatments([
            TreatmentRow(t.idempotency_key, t.treatment_id, t.customer_id, t.action_id,
                         t.decided_at_ms, packb(t.to_wire())) for t in treatments],
            decisions=audit)
        fired = []
        for treatment, is_new in zip(treatments, fresh, strict=True):
            self._settle_budget(treatment.action_id, treatment.idempotency_key, is_new)
            if not is_new:
                continue
            customer = self.customer(treatment.customer_id, now_ms)
            customer.contacts.record_contact(self.chain.contact(
                treatment.treatment_id, treatment.action_id, now_ms))
            self._track(customer, treatment, now_ms, holdout=False)
            if self._send(treatment, attempts=1):
                fired.append(treatment)
                if self.always_on is not None:
                    self.always_on.contacted(treatment.customer_id, now_ms)
                    self.always_on.treated(treatment.payload.get("moment_id"))
        self._dispatched(fired)
        return fired

    def _dispatched(self, sent: list[Treatment]) -> None:
        """Treatments the channel took: their outbox rows are closed by the next ``mark_sent``
        (the shard's maintenance tick), not in a transaction per decision turn."""
        self.unmarked.extend(t.idempotency_key for t in sent)

    def mark_sent(self) -> int:
        """Close the outbox rows of every treatment sent since the last call, in one
        transaction. Until then they are pending: a crash leaves them so, and the redispatch
        after recovery finds them at the channel (``delivered``) and marks them without a
        resend (a channel that cannot tell gets them again, with the same key). At 10,000
        events/s a mark per turn was 28 % of a shard's write transactions (stop 40)."""
        if not self.unmarked:
            return 0
        keys, self.unmarked = self.unmarked, []
        try:
            return self.store.mark_dispatched(keys, self.clock.now_ms())
        except BaseException:
            self.unmarked[:0] = keys  # still to mark
            raise

    def present(self, verdict: Verdict) -> Treatment | None:
        """Record an inbound winner the caller shows (web page, call centre) as a treatment:
        in the ledger, the contact history and outcome tracking; the caller does the showing."""
        if verdict.winner is None:
            return None
        now_ms = self.clock.now_ms()
        best = _winning(verdict)
        key = idempotency_key(verdict.customer_id, best.action_id, f"inbound@{now_ms}")
        action = self.catalog.actions[best.action_id]
        treatment = Treatment(
            treatment_id=hashlib.blake2b(key.encode(), digest_size=10).hexdigest(),
            idempotency_key=key, customer_id=verdict.customer_id, action_id=action.id,
            channel=action.channel, decided_at_ms=now_ms,
            payload={"kind": action.kind, "message": action.message, "trigger": "inbound",
                     "presented_by_caller": True,
                     "factors": {"p": best.p, "c": best.c, "v": best.v, "l": best.l,
                                 "score": best.score}})
        [fresh] = self.store.record_treatments([TreatmentRow(
            key, treatment.treatment_id, treatment.customer_id, action.id, now_ms,
            packb(treatment.to_wire()))])
        if not fresh:
            return None
        self.unmarked.append(key)  # the caller shows it: a redispatch never sends it
        customer = self.customer(verdict.customer_id)
        customer.contacts.record_contact(self.chain.contact(treatment.treatment_id, action.id,
                                                            now_ms))
        self._track(customer, treatment, now_ms, holdout=False)
        if self.persistence is not None:
            self.persistence.touched([customer.customer_id])
        return treatment

    def settle_inbound(self, verdict: Verdict, presented: bool) -> None:
        """The budget the arbitrator reserved for an inbound winner: spent when the caller
        presented it, given back otherwise (a Decide that only asks sends nothing)."""
        if verdict.winner is None:
            return
        best = _winning(verdict)
        token = idempotency_key(verdict.customer_id, best.action_id, best.moment_id)
        self._settle_budget(best.action_id, token, presented)

    def _settle_budget(self, action_id: str, token: str, spent: bool) -> None:
        """Queue the settlement of a budget reservation for the arbitrator: spent, or given
        back. Only budgeted actions have reservations, so the others queue nothing."""
        if action_id in self.budgeted:
            self.budget_settled.append([token, spent])

    def _track(self, customer: CustomerState, treatment: Treatment, now_ms: int, *,
               holdout: bool) -> None:
        row = self._features(customer, now_ms)
        code = int(np.ravel_multi_index(row, self.cardinalities)) if row else 0
        self.tracker.track(treatment.treatment_id, customer.customer_id, treatment.action_id,
                           now_ms, self.chain.response_timeout_s(treatment.action_id),
                           feature_bin=code, holdout=holdout)

    def due_sends(self, customer: CustomerState, now_ms: int) -> list[Treatment]:
        """Deferred treatments now due, re-checked against consent and contact policy."""
        ready = []
        for data in customer.due_sends(now_ms):
            treatment = Treatment.from_wire(data)
            removal = self.chain.recheck_before_send(
                treatment.action_id, self._context(customer, now_ms, "triggered"))
            if removal is None:
                ready.append(treatment)
                continue
            self.stats["dropped_at_send"] += 1
            self._settle_budget(treatment.action_id, treatment.idempotency_key, False)
            log.info("shard %d: %s not sent: %s", self.index, treatment.idempotency_key,
                     removal.reason)
        return ready

    # -- outcomes -------------------------------------------------------------------------
    def record_outcomes(self, items: Iterable[Any]) -> list[list[Any]]:
        """Outcomes ``[treatment_id, customer_id, kind, at_ms]``: one ack each."""
        acks: list[list[Any]] = []
        for item in items:
            try:
                treatment_id, customer_id, kind, at_ms = item
                resolution = self.tracker.observe(treatment_id, kind, int(at_ms))
                customer = self.find(customer_id)
                if customer is not None:
                    customer.contacts.record_outcome(treatment_id, kind, int(at_ms))
                    if self.persistence is not None:
                        self.persistence.touched([customer_id])
            except (TypeError, ValueError) as exc:
                acks.append([codec.REJECTED, f"bad outcome: {exc}", "outcome"])
                continue
            if resolution is not None:
                self._resolved(resolution)
            acks.append([codec.ACCEPTED, ""])
        return acks

    def _resolved(self, resolution: Resolution) -> None:
        self.resolutions.append(resolution)
        if not resolution.holdout:
            self.learned.append([resolution.action_id, resolution.feature_bin,
                                 resolution.positive])

    def take_learned(self) -> tuple[list[list[Any]], list[list[Any]]]:
        """(outcomes to learn from, budget reservations settled) for the arbitrator."""
        learned, self.learned = self.learned, []
        settled, self.budget_settled = self.budget_settled, []
        return learned, settled

    def redispatch(self, limit: int = 1000) -> int:
        """Send ledger rows of this shard's customers still pending in the outbox; return how
        many were sent. A row the channel took before a crash (killed between the send and
        its mark) is only marked: the channel does not get it twice; so is a row an inbound
        caller presented (the caller showed it, Shush sends nothing)."""
        if self.persistence is None:
            return 0
        self.mark_sent()  # what this shard sent is not pending, whatever the store says
        mine = set(self.persistence.partitions)
        pending = [(item, Treatment.from_wire(msgpack.unpackb(item.payload, raw=False)))
                   for item in self.store.pending_outbox(limit, now_ms=self.clock.now_ms())
                   if self.persistence.partition(item.customer_id) in mine]
        to_send = {t.idempotency_key for _, t in pending if not _presented(t)}
        delivered = (self.channel.delivered(to_send)
                     if to_send else set())  # (most ticks: nothing pending, nothing to ask)
        done, resent = [], 0
        for item, treatment in pending:
            if _presented(treatment):  # shown by an inbound caller: nothing to send
                done.append(treatment)
            elif treatment.idempotency_key in delivered:
                self.stats["delivered_before"] += 1
                done.append(treatment)
            elif self._send(treatment, attempts=item.attempts + 1):
                resent += 1
                done.append(treatment)
        self._dispatched(done)
        self.mark_sent()
        return resent

    def _send(self, treatment: Treatment, *, attempts: int) -> bool:
        try:
            self.channel.send(treatment)  # fired the moment it is decided, one at a time
        except Exception as exc:  # the outbox keeps it; a later redispatch retries
            log.exception("channel %s failed to send %s", treatment.channel,
                          treatment.idempotency_key)
            self.stats["send_failures"] += 1
            if attempts >= self.config.max_send_attempts:  # give up: kept with the reason
                self.store.mark_failed(treatment.idempotency_key, str(exc), attempts)
                self.store.dead_letter([DeadLetterRow(
                    kind="treatment", reason=f"{attempts} sends failed, the last: {exc}",
                    field="channel", payload=packb(treatment.to_wire()),
                    at_ms=self.clock.now_ms())])
                return False
            backoff_ms = min(60_000, 1000 * 2 ** min(attempts, 6))
            self.store.mark_failed(treatment.idempotency_key, str(exc), attempts,
                                   retry_at_ms=self.clock.now_ms() + backoff_ms)
            return False
        self.stats["treatments"] += 1
        return True

    def _reasons(self, verdict: Verdict, removed: list[Removal]) -> list[str]:
        reasons = []
        if verdict.candidates:
            best = _winning(verdict)
            line = f"{best.action_id}: {explain(best)}"
            others = [c for c in verdict.candidates
                      if c.action_id != best.action_id and c.action_id not in verdict.also]
            if others:
                line += f", ahead of {others[0].action_id} ({others[0].score:.2f})"
            reasons.append(line)
            reasons.extend(f"{c.action_id} wins its own channel competition: {explain(c)}"
                           for c in verdict.candidates if c.action_id in verdict.also)
        reasons.extend(f"{r.action_id} removed by {r.policy}: {r.reason}" for r in removed)
        return reasons

    def recent_decisions(self, customer_id: str) -> list[dict[str, Any]]:
        """The customer's latest decisions, oldest first, from the decision audit."""
        rows = self.store.recent_decisions(customer_id, self.config.decisions_per_customer)
        return [msgpack.unpackb(row.data, raw=False) for row in reversed(rows)]

    def _moment(self, customer: CustomerState, moment_id: str | None) -> Moment | None:
        return next((m for m in customer.moments if m.moment_id == moment_id), None)

    def _plan(self, customer: CustomerState, best: Candidate, now_ms: int) -> Treatment | None:
        key = idempotency_key(customer.customer_id, best.action_id, best.moment_id)
        moment = self._moment(customer, best.moment_id)
        expires_ms = (moment.occurred_at_ms + int(moment.ttl_s * 1000) if moment
                      else now_ms + 86_400_000)
        if not customer.mark_treated(key, expires_ms):
            return None
        action = self.catalog.actions[best.action_id]
        return Treatment(
            treatment_id=hashlib.blake2b(key.encode(), digest_size=10).hexdigest(),
            idempotency_key=key, customer_id=customer.customer_id, action_id=action.id,
            channel=action.channel, decided_at_ms=now_ms,
            payload={
                "kind": action.kind, "message": action.message,
                "moment": moment.name if moment else None, "moment_id": best.moment_id,
                "factors": {"p": best.p, "c": best.c, "v": best.v, "l": best.l,
                            "score": best.score},
                "why": [],
            })
