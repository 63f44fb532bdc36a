"""Which actions a customer may get now: applicability, idempotency and eligibility.

Applicable: the action names a live moment of the customer (C is the best decayed relevance
among them), or, for an inbound request, the action names no moment at all (C = 1).
Removed (with the policy and reason recorded): already treated for that moment, not eligible,
or a policy expression that failed on this customer's data.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..engine.arbitration import CandidateSet
from ..engine.catalog import Catalog
from ..engine.customer import CustomerState
from ..engine.errors import CatalogError, ExpressionError
from ..engine.models import Removal
from .expressions import Expression, compile_expression


def idempotency_key(customer_id: str, action_id: str, moment_id: str | None) -> str:
    return f"{customer_id}|{action_id}|{moment_id or 'inbound'}"


class EligibilityPolicy:
    """The catalog's eligibility expressions, compiled once."""

    name = "eligibility"

    def __init__(self, catalog: Catalog) -> None:
        """Compile every rule; an invalid one fails with the file, action and field named."""
        self.rules: dict[str, Expression] = {}
        for action in catalog.actions.values():
            if action.eligibility is None:
                continue
            try:
                self.rules[action.id] = compile_expression(action.eligibility)
            except ExpressionError as exc:
                raise CatalogError(str(exc), file=catalog.sources.get(f"actions/{action.id}"),
                                   item=action.id, field="eligibility") from exc

    def check(self, action_id: str, namespace: Mapping[str, object]) -> str | None:
        """``None`` if eligible, else the reason."""
        rule = self.rules.get(action_id)
        if rule is None:
            return None
        try:
            if rule.evaluate(namespace):
                return None
        except ExpressionError as exc:
            return f"rule failed: {exc.reason}"
        return f"not eligible: {rule.source}"


def build_candidates(customer: CustomerState, catalog: Catalog, eligibility: EligibilityPolicy,
                     now_ms: int, *, inbound: bool = False, channel: str | None = None,
                     namespace: Mapping[str, object] | None = None
                     ) -> tuple[CandidateSet, list[Removal]]:
    """``namespace``: the customer's policy namespace at ``now_ms`` when the caller has it
    (built here otherwise, if an eligibility rule reads it)."""
    best: dict[str, tuple[float, str | None]] = {}
    moments = customer.current_moments(now_ms)
    for moment in moments:
        relevance = moment.relevance(now_ms)
        for action in catalog.actions_by_moment.get(moment.name, ()):
            if relevance >= best.get(action.id, (0.0, None))[0]:  # ties: the newer moment
                best[action.id] = (relevance, moment.moment_id)
    if inbound:
        for action in catalog.actions.values():
            if not action.moments:
                best[action.id] = (1.0, None)
    removed: list[Removal] = []
    if namespace is None:
        namespace = customer.namespace(now_ms, moments) if eligibility.rules else {}
    action_ids: list[str] = []
    contexts: list[float] = []
    moment_ids: list[str | None] = []
    for action_id in sorted(best):
        context, moment_id = best[action_id]
        if channel is not None and catalog.actions[action_id].channel != channel:
            continue
        if not inbound and idempotency_key(customer.customer_id, action_id,
                                           moment_id) in customer.treated:
            removed.append(Removal(action_id=action_id, policy="idempotency",
                                   reason=f"already treated for {moment_id}"))
            continue
        reason = eligibility.check(action_id, namespace)
        if reason is not None:
            removed.append(Removal(action_id=action_id, policy=eligibility.name, reason=reason))
            continue
        action_ids.append(action_id)
        contexts.append(context)
        moment_ids.append(moment_id)
    return CandidateSet(customer.customer_id, tuple(action_ids), tuple(contexts),
                        tuple(moment_ids)), removed
