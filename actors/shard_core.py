"""The body of a shard, without Ray: hosts customer actors and runs their turns.

A batch of events is applied customer by customer, in order; customers that got new moments
are decided (candidates here, scoring in the arbitration actor), and each winner is fired
individually, once per idempotency key. ``ShardActor`` is the thin Ray shell around this.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from typing import Any

from ..engine import codec
from ..engine.arbitration import CandidateSet, Verdict, explain
from ..engine.catalog import Catalog
from ..engine.clock import Clock
from ..engine.config import ShardConfig
from ..engine.customer import CustomerState
from ..engine.models import Decision, Moment, Removal, Treatment
from ..engine.signals import SignalRecord
from ..policies.candidates import EligibilityPolicy, build_candidates, idempotency_key
from .ports import TreatmentChannel

log = logging.getLogger(__name__)

Trigger = str  # "triggered" | "inbound" | "sweep" | "emergency"


class ShardCore:
    def __init__(self, index: int, catalog: Catalog, config: ShardConfig, clock: Clock,
                 channel: TreatmentChannel) -> None:
        self.index = index
        self.catalog = catalog
        self.config = config
        self.clock = clock
        self.channel = channel
        self.eligibility = EligibilityPolicy(catalog)
        self.customers: dict[str, CustomerState] = {}
        self.awaiting_decision: set[str] = set()
        self.stats = {"events": 0, "duplicates": 0, "rejected": 0, "moments": 0,
                      "decisions": 0, "treatments": 0}

    def customer(self, customer_id: str) -> CustomerState:
        state = self.customers.get(customer_id)
        if state is None:
            state = CustomerState(customer_id, dedup_ids=self.config.dedup_ids_per_customer,
                                  decisions=self.config.decisions_per_customer)
            self.customers[customer_id] = state
        return state

    def apply_events(self, events: Iterable[Any]) -> list[list[Any]]:
        """Apply wire events in order; return one ack ``[status, reason]`` per event.

        One bad event is rejected on its own; it never stops the batch or the shard.
        """
        acks: list[list[Any]] = []
        for event in events:
            try:
                signal = SignalRecord._make(event)
                if signal.type not in self.catalog.signals:
                    raise ValueError(f"unknown signal type {signal.type!r}")
                moments = self.customer(signal.customer_id).apply(signal, self.catalog)
            except Exception as exc:  # loop boundary: one message must not kill the shard
                log.exception("shard %d could not apply an event", self.index)
                self.stats["rejected"] += 1
                acks.append([codec.REJECTED, f"shard could not apply the event: {exc}"])
                continue
            if moments is None:
                self.stats["duplicates"] += 1
                acks.append([codec.DUPLICATE, "duplicate event_id"])
                continue
            self.stats["events"] += 1
            if moments:
                self.stats["moments"] += len(moments)
                self.awaiting_decision.add(signal.customer_id)
            acks.append([codec.ACCEPTED, ""])
        return acks

    def candidate_sets(self, customer_ids: Iterable[str], *, inbound: bool = False,
                       channel: str | None = None,
                       ) -> tuple[list[CandidateSet], dict[str, list[Removal]]]:
        now_ms = self.clock.now_ms()
        sets: list[CandidateSet] = []
        removals: dict[str, list[Removal]] = {}
        for customer_id in customer_ids:
            cset, removed = build_candidates(self.customer(customer_id), self.catalog,
                                             self.eligibility, now_ms, inbound=inbound,
                                             channel=channel)
            sets.append(cset)
            removals[customer_id] = removed
        return sets, removals

    def take_awaiting(self) -> list[str]:
        pending = sorted(self.awaiting_decision)
        self.awaiting_decision.clear()
        return pending

    def settle(self, verdicts: Iterable[Verdict], removals: dict[str, list[Removal]],
               trigger: Trigger = "triggered") -> list[Treatment]:
        """Record each decision and fire each winner, one customer at a time."""
        fired: list[Treatment] = []
        now_ms = self.clock.now_ms()
        for verdict in verdicts:
            customer = self.customer(verdict.customer_id)
            removed = removals.get(verdict.customer_id, [])
            if not verdict.candidates and not removed:
                continue
            decision = Decision.model_construct(
                customer_id=verdict.customer_id, decided_at_ms=now_ms, trigger=trigger,
                candidates=verdict.candidates, removed=tuple(removed), winner=verdict.winner,
                reasons=tuple(self._reasons(verdict, removed)))
            customer.decisions.append(decision)
            self.stats["decisions"] += 1
            if verdict.winner is None:
                continue
            treatment = self._fire(customer, verdict, decision, now_ms)
            if treatment is not None:
                fired.append(treatment)
        return fired

    def _reasons(self, verdict: Verdict, removed: list[Removal]) -> list[str]:
        reasons = []
        if verdict.candidates:
            best = verdict.candidates[0]
            line = f"{best.action_id}: {explain(best)}"
            if len(verdict.candidates) > 1:
                runner = verdict.candidates[1]
                line += f", ahead of {runner.action_id} ({runner.score:.2f})"
            reasons.append(line)
        reasons.extend(f"{r.action_id} removed by {r.policy}: {r.reason}" for r in removed)
        return reasons

    def _moment(self, customer: CustomerState, moment_id: str | None) -> Moment | None:
        return next((m for m in customer.moments if m.moment_id == moment_id), None)

    def _fire(self, customer: CustomerState, verdict: Verdict, decision: Decision,
              now_ms: int) -> Treatment | None:
        best = verdict.candidates[0]
        key = idempotency_key(customer.customer_id, best.action_id, best.moment_id)
        moment = self._moment(customer, best.moment_id)
        expires_ms = (moment.occurred_at_ms + int(moment.ttl_s * 1000) if moment
                      else now_ms + 86_400_000)
        if not customer.mark_treated(key, expires_ms):
            return None
        action = self.catalog.actions[best.action_id]
        treatment = Treatment.model_construct(
            treatment_id=hashlib.blake2b(key.encode(), digest_size=10).hexdigest(),
            idempotency_key=key, customer_id=customer.customer_id, action_id=action.id,
            channel=action.channel, decided_at_ms=now_ms,
            payload={
                "kind": action.kind, "message": action.message,
                "moment": moment.name if moment else None, "moment_id": best.moment_id,
                "trigger": decision.trigger,
                "factors": {"p": best.p, "c": best.c, "v": best.v, "l": best.l,
                            "score": best.score},
                "why": list(decision.reasons),
            })
        try:
            self.channel.send(treatment)  # fired the moment it is decided, one at a time
        except Exception:  # a failed send may be retried by a later decision
            log.exception("channel %s failed to send %s", action.channel, key)
            customer.treated.pop(key, None)
            return None
        self.stats["treatments"] += 1
        return treatment
