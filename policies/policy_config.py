"""The ``policies:`` section of a catalog: contact caps, suppression, consent, quiet hours,
outcome kinds, context features and per-action policy settings, validated by pydantic.

``parse_policies(raw, actions=..., file=...)`` validates and cross-checks the section (action ids
exist, features named by actions are declared, expressions compile, time zones exist) and
raises ``CatalogError`` naming the file, the item and the field.

Contact classes: every action is ``marketing``, ``service`` or ``safety``; by default its
``Action.kind``, unless its policy says ``contact_class: safety``. Caps, quiet hours and the
service-issue rule select classes, so service and safety treatments have their own caps.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import time
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..engine.catalog import Catalog
from ..engine.errors import CatalogError, ExpressionError
from ..engine.models import Action
from ..engine.outcomes import IGNORED, OutcomeKinds
from .expressions import compile_expression

__all__ = ["ActionPolicy", "CapRule", "ConsentConfig", "ContactClass", "ContactPolicyConfig",
           "FeatureSpec", "PolicyCatalog", "QuietHoursRule", "SuppressionRule",
           "parse_policies"]

ContactClass = Literal["marketing", "service", "safety"]
Bypass = Literal["caps", "cooldown", "suppression", "service_issue"]
Identifier = Annotated[str, Field(min_length=1, max_length=128)]


class _Item(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _check_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None
    return name


class CapRule(_Item):
    id: Identifier
    max_count: int = Field(ge=0, description="Contacts allowed in the window; the next is removed")
    window_days: int = Field(ge=1, le=366, description="Calendar days in the customer's time "
                             "zone, today included (7: today and the 6 days before)")
    channel: str | None = Field(None, description="Only this channel; None: all (a global cap)")
    classes: tuple[ContactClass, ...] = Field(("marketing",), min_length=1,
                                              description="Contact classes counted and capped")
    hard: bool = Field(False, description="A hard cap holds even in an emergency bypass")


class SuppressionRule(_Item):
    outcome: Identifier = Field("rejected", description="A negative outcome kind, or 'ignored'")
    count: int = Field(ge=1, description="This many outcomes ...")
    within_days: float = Field(gt=0, description="... within this many days ...")
    suppress_days: float = Field(gt=0, description="... suppress for this many days")
    scope: Literal["action", "group"] = Field("action", description="Count the action or its group")


DEFAULT_SUPPRESSION = (
    SuppressionRule(outcome="rejected", count=3, within_days=30, suppress_days=30),
    SuppressionRule(outcome=IGNORED, count=5, within_days=30, suppress_days=14),
)


class ContactPolicyConfig(_Item):
    caps: tuple[CapRule, ...] = ()
    suppression: tuple[SuppressionRule, ...] = Field(
        DEFAULT_SUPPRESSION, description="Default rules for actions that declare none")
    no_marketing_while_service_issue: bool = True
    service_issue_when: str | None = Field(
        None, description="Expression that is true while a service issue is open, besides "
        "the open issues the shard passes (e.g. \"'card_declined' in moments\")")
    emergency_bypass: tuple[Bypass, ...] = Field(
        ("caps", "cooldown"), description="What an emergency run with bypass skips (soft caps "
        "only; consent and hard caps are never bypassed)")

    @field_validator("caps")
    @classmethod
    def _unique_caps(cls, caps: tuple[CapRule, ...]) -> tuple[CapRule, ...]:
        ids = [c.id for c in caps]
        if len(set(ids)) != len(ids):
            raise ValueError(f"cap ids must be unique: {ids}")
        return caps


class ConsentConfig(_Item):
    require_opt_in: tuple[str, ...] = Field(
        (), description="Scopes that need an explicit opt-in: 'sms' (any purpose), "
        "'email:marketing', '*:marketing'")


class QuietHoursRule(_Item):
    start: time = Field(description="Local time the quiet period starts (inclusive)")
    end: time = Field(description="Local time it ends (exclusive); before start: over midnight")
    classes: tuple[ContactClass, ...] = Field(("marketing", "service"), min_length=1)
    channels: tuple[str, ...] | None = Field(None, description="None: every channel")

    @model_validator(mode="after")
    def _not_empty(self) -> QuietHoursRule:
        if self.start == self.end:
            raise ValueError("quiet hours need start != end")
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError("quiet hours are local wall times; give no UTC offset")
        return self


class FeatureSpec(_Item):
    """A context feature: an expression over the customer, binned."""

    name: Identifier
    expression: str = Field(description="Policy expression giving the raw value")
    edges: tuple[float, ...] | None = Field(None, description="Ascending numeric bin edges")
    categories: tuple[str, ...] | None = Field(None, description="Known string values")

    @model_validator(mode="after")
    def _one_binning(self) -> FeatureSpec:
        if (self.edges is None) == (self.categories is None):
            raise ValueError("give exactly one of edges or categories")
        if self.edges is not None and list(self.edges) != sorted(set(self.edges)):
            raise ValueError("edges must be strictly ascending")
        return self

    @property
    def cardinality(self) -> int:
        """Bin 0 is 'missing/other'; numeric values take 1..len(edges)+1."""
        return len(self.edges) + 2 if self.edges is not None else len(self.categories or ()) + 1


class ActionPolicy(_Item):
    group: str | None = Field(None, description="Suppression group (e.g. 'loans')")
    contact_class: ContactClass | None = Field(None, description="Default: the action's kind")
    cooldown_s: float = Field(0.0, ge=0, description="No repeat of this action within it")
    response_timeout_s: float = Field(7 * 86_400.0, gt=0,
                                      description="No answer within it counts as ignored")
    holdout_pct: float = Field(0.0, ge=0, le=100, description="Control group size, percent")
    holdout_validity_days: float = Field(90.0, gt=0, description="Sticky membership period")
    budget_per_day: int | None = Field(None, ge=0, description="Cluster-wide fires per day")
    suppression: tuple[SuppressionRule, ...] | None = Field(
        None, description="None: the contact section's default rules")
    context_features: tuple[str, ...] = Field((), description="Features P is learned by")


class PolicyCatalog(_Item):
    default_timezone: str = Field("UTC", description="For customers without profile.tz")
    budget_timezone: str = Field("UTC", description="Where a budget day starts and ends")
    contact: ContactPolicyConfig = ContactPolicyConfig()
    consent: ConsentConfig = ConsentConfig()
    quiet_hours: tuple[QuietHoursRule, ...] = ()
    outcomes: OutcomeKinds = OutcomeKinds()
    features: tuple[FeatureSpec, ...] = ()
    actions: dict[str, ActionPolicy] = Field(default_factory=dict)

    _zones = field_validator("default_timezone", "budget_timezone")(_check_zone)

    def for_action(self, action_id: str) -> ActionPolicy:
        return self.actions.get(action_id) or _DEFAULT_ACTION_POLICY

    def budget_limits(self) -> dict[str, int]:
        """Fires per day of each action that has a volume budget."""
        return {a: p.budget_per_day for a, p in self.actions.items()
                if p.budget_per_day is not None}

    def contact_class(self, action: Action) -> ContactClass:
        declared = self.for_action(action.id).contact_class
        return declared if declared is not None else action.kind

    def suppression_for(self, action_id: str) -> tuple[SuppressionRule, ...]:
        rules = self.for_action(action_id).suppression
        return self.contact.suppression if rules is None else rules

    def feature_index(self) -> dict[str, int]:
        return {f.name: i for i, f in enumerate(self.features)}


_DEFAULT_ACTION_POLICY = ActionPolicy()


def _fail(reason: str, file: str | None, item: str | None, field: str) -> CatalogError:
    return CatalogError(reason, file=file, item=item, field=f"policies.{field}")


def parse_policies(raw: Any, *, actions: Mapping[str, Action],
                   file: str | None = None) -> PolicyCatalog:
    """Validate a ``policies:`` section (None or {} gives the defaults) and cross-check it."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise _fail("the policies section must be a mapping", file, None, "")
    try:
        catalog = PolicyCatalog.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = [str(part) for part in first["loc"]]
        item = loc[1] if len(loc) > 1 and loc[0] == "actions" else None
        raise _fail(first["msg"], file, item, ".".join(loc)) from exc
    features = catalog.feature_index()
    if len(features) != len(catalog.features):
        raise _fail("feature names must be unique", file, None, "features")
    for i, spec in enumerate(catalog.features):
        try:
            compile_expression(spec.expression)
        except ExpressionError as exc:
            raise _fail(str(exc), file, spec.name, f"features.{i}.expression") from exc
    if catalog.contact.service_issue_when is not None:
        try:
            compile_expression(catalog.contact.service_issue_when)
        except ExpressionError as exc:
            raise _fail(str(exc), file, None, "contact.service_issue_when") from exc
    negative = {*catalog.outcomes.negative, IGNORED}
    rules: list[tuple[str, str | None, tuple[SuppressionRule, ...]]] = [
        ("contact.suppression", None, catalog.contact.suppression)]
    for action_id, policy in catalog.actions.items():
        if action_id not in actions:
            raise _fail(f"no action {action_id!r} in the catalog", file, action_id,
                        f"actions.{action_id}")
        for name in policy.context_features:
            if name not in features:
                raise _fail(f"unknown context feature {name!r} (declared: "
                            f"{', '.join(sorted(features)) or 'none'})", file, action_id,
                            f"actions.{action_id}.context_features")
        if policy.suppression is not None:
            rules.append((f"actions.{action_id}.suppression", action_id, policy.suppression))
        if any(r.scope == "group" for r in policy.suppression or ()) and policy.group is None:
            raise _fail("a group-scoped suppression rule needs the action's group", file,
                        action_id, f"actions.{action_id}.group")
    for where, item, section in rules:
        for i, rule in enumerate(section):
            if rule.outcome not in negative:
                raise _fail(f"suppression counts negative outcomes ({', '.join(sorted(negative))})"
                            f", not {rule.outcome!r}", file, item, f"{where}.{i}.outcome")
    return catalog


def catalog_policies(catalog: Catalog) -> PolicyCatalog:
    """The catalog's ``policies:`` section, validated against its actions."""
    return parse_policies(catalog.policies or None, actions=catalog.actions,
                          file=catalog.sources.get("policies"))
