"""The policy chain: consent and contact policy over a customer's candidates, before scoring;
quiet hours, holdout and the re-check before a send, after.

Before arbitration, each candidate goes through, in order (the first to refuse removes it and
names itself in the ``Removal``)::

    consent -> service_issue -> suppression -> cooldown -> contact_cap

An emergency run (``trigger == "emergency"`` with ``emergency_bypass``) skips what the
configuration's ``contact.emergency_bypass`` lists (by default soft caps and cooldown); it
never skips consent or a hard cap.

After arbitration, for the winner: ``holdout`` (a held-out customer gets nothing; track a
holdout record), ``send_plan`` (now, or the next time outside quiet hours: a durable timer),
and, at the moment of sending, ``recheck_before_send`` with the customer's state as it is then
(consent may have changed while the treatment waited).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from ..engine.arbitration import CandidateSet
from ..engine.contact_history import Contact, ContactHistory
from ..engine.errors import ExpressionError
from ..engine.holdout import in_holdout
from ..engine.models import Action, Removal
from ..engine.records import record
from .consent import ConsentPolicy, ConsentRecord
from .contact import CapsPolicy, ContactView, CooldownPolicy, ServiceIssuePolicy, SuppressionPolicy
from .expressions import compile_expression
from .local_time import customer_zone
from .policy_config import ActionPolicy, ContactClass, PolicyCatalog, SuppressionRule
from .quiet_hours import QuietHoursPolicy

__all__ = ["CustomerContext", "PolicyChain", "SendPlan"]


@dataclass(slots=True)
class CustomerContext:
    """What the chain needs to know about one customer at one decision (or send)."""

    customer_id: str
    now_ms: int
    profile: Mapping[str, Any]
    history: ContactHistory
    consent: ConsentRecord | None = None  # None: read from the profile
    open_service_issues: tuple[str, ...] = ()
    trigger: str = "triggered"  # triggered | inbound | sweep | emergency
    emergency_bypass: bool = False  # the operator's word, honoured only for emergency runs
    namespace: Mapping[str, Any] | None = None  # for contact.service_issue_when


# (action, its policy settings, contact class, suppression rules): a plain tuple, which
# CPython unpacks in a few instructions (a NamedTuple goes through the iterator protocol)
_ActionPolicies = tuple[Action, ActionPolicy, ContactClass, tuple[SuppressionRule, ...]]


@record
class SendPlan:
    send_now: bool
    at_ms: int  # now, or when quiet hours end
    reason: str = ""


class PolicyChain:
    def __init__(self, actions: Mapping[str, Action], policy: PolicyCatalog) -> None:
        self.actions = actions
        self.policy = policy
        self.consent = ConsentPolicy(policy.consent)
        self.service_issue = ServiceIssuePolicy()
        self.suppression = SuppressionPolicy()
        self.cooldown = CooldownPolicy()
        self.caps = CapsPolicy(policy.contact.caps)
        self.quiet_hours = QuietHoursPolicy(policy.quiet_hours)
        when = policy.contact.service_issue_when
        self._issue_rule = compile_expression(when) if when else None
        self._bypass = frozenset(policy.contact.emergency_bypass)
        # what the chain reads of each action on every check: its policy settings, contact
        # class and suppression rules, looked up once (catalogs do not change under a chain)
        self._per_action: dict[str, _ActionPolicies] = {
            a: (action, policy.for_action(a), policy.contact_class(action),
                policy.suppression_for(a))
            for a, action in actions.items()}

    # -- helpers --------------------------------------------------------------------------
    @property
    def needs_namespace(self) -> bool:
        """Whether ``check`` reads ``CustomerContext.namespace`` (a service-issue rule)."""
        return self._issue_rule is not None

    def zone(self, ctx: CustomerContext) -> ZoneInfo:
        return customer_zone(ctx.profile, self.policy.default_timezone)

    def _bypassed(self, ctx: CustomerContext) -> frozenset[str]:
        if ctx.trigger == "emergency" and ctx.emergency_bypass:
            return self._bypass
        return frozenset()

    def open_issues(self, ctx: CustomerContext) -> tuple[str, ...]:
        issues = ctx.open_service_issues
        if self._issue_rule is not None and ctx.namespace is not None:
            try:
                if self._issue_rule.evaluate(ctx.namespace):
                    issues = (*issues, self._issue_rule.source)
            except ExpressionError:
                pass  # a rule failing on one customer's data does not block their marketing
        return issues

    # -- before arbitration ---------------------------------------------------------------
    def check(self, action_id: str, ctx: CustomerContext, *, view: ContactView | None = None,
              consent: ConsentRecord | None = None,
              issues: tuple[str, ...] | None = None) -> Removal | None:
        """The first policy that refuses this action for this customer now, or None."""
        action, settings, cls, suppression = self._per_action[action_id]
        bypass = self._bypassed(ctx)
        if consent is None:
            consent = ctx.consent or ConsentRecord.from_profile(ctx.profile)
        if view is None:
            view = ContactView(ctx.history, self.zone(ctx), ctx.now_ms)
        reason = self.consent.check(consent, action.channel, cls)
        if reason is not None:
            return Removal(action_id=action_id, policy=self.consent.name, reason=reason)
        if "service_issue" not in bypass:
            reason = self.service_issue.check(
                cls, self.open_issues(ctx) if issues is None else issues)
            if reason is not None:
                return Removal(action_id=action_id, policy=self.service_issue.name, reason=reason)
        if "suppression" not in bypass:
            reason = self.suppression.check(action_id, settings.group, suppression, view)
            if reason is not None:
                return Removal(action_id=action_id, policy=self.suppression.name, reason=reason)
        if "cooldown" not in bypass:
            reason = self.cooldown.check(action_id, settings.cooldown_s, view)
            if reason is not None:
                return Removal(action_id=action_id, policy=self.cooldown.name, reason=reason)
        reason = self.caps.check(action.channel, cls, view, bypass_soft="caps" in bypass)
        if reason is not None:
            return Removal(action_id=action_id, policy=self.caps.name, reason=reason)
        return None

    def run(self, cset: CandidateSet, ctx: CustomerContext) -> tuple[CandidateSet, list[Removal]]:
        """Survivors (same order, contexts and moments) and one ``Removal`` per removed."""
        view = ContactView(ctx.history, self.zone(ctx), ctx.now_ms)
        consent = ctx.consent or ConsentRecord.from_profile(ctx.profile)
        issues = self.open_issues(ctx)
        keep: list[int] = []
        removed: list[Removal] = []
        for i, action_id in enumerate(cset.action_ids):
            removal = self.check(action_id, ctx, view=view, consent=consent, issues=issues)
            if removal is None:
                keep.append(i)
            else:
                removed.append(removal)
        if len(keep) == len(cset.action_ids):
            return cset, removed
        return CandidateSet(cset.customer_id, tuple(cset.action_ids[i] for i in keep),
                            tuple(cset.contexts[i] for i in keep),
                            tuple(cset.moment_ids[i] for i in keep)), removed

    # -- after arbitration ----------------------------------------------------------------
    def holdout(self, customer_id: str, action_id: str, now_ms: int) -> bool:
        """True: the customer is in this action's control group (no treatment)."""
        settings = self.policy.for_action(action_id)
        return in_holdout(customer_id, action_id, settings.holdout_pct,
                          settings.holdout_validity_days * 86_400.0, now_ms)

    def send_plan(self, action_id: str, ctx: CustomerContext) -> SendPlan:
        action, _, cls, _ = self._per_action[action_id]
        at = self.quiet_hours.send_at_ms(action.channel, cls, ctx.now_ms, self.zone(ctx))
        if at is None:
            return SendPlan(True, ctx.now_ms)
        return SendPlan(False, at, f"quiet hours for {action.channel}: deferred to {at} ms")

    def recheck_before_send(self, action_id: str, ctx: CustomerContext) -> Removal | None:
        """Consent and contact policy again, with the state as it is at the send."""
        return self.check(action_id, ctx)

    def contact(self, treatment_id: str, action_id: str, sent_ms: int) -> Contact:
        """The contact-history entry to record when the treatment fires."""
        action, settings, cls, _ = self._per_action[action_id]
        return Contact(treatment_id, action_id, action.channel, cls, sent_ms, settings.group)

    def response_timeout_s(self, action_id: str) -> float:
        return self.policy.for_action(action_id).response_timeout_s
