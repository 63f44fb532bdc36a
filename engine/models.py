"""The domain's pydantic models, used at the edges (adapters, catalogs, explanations).

Inside the engine, events travel as plain wire lists (``engine.codec``) and the hot path uses
slotted objects; these models are what callers and operators see.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Identifier = Annotated[str, Field(min_length=1, max_length=128)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Signal(_Model):
    """Something a customer did or lived through, as submitted by a source."""

    event_id: Identifier = Field(description="Unique per event; retries reuse it")
    customer_id: Identifier
    type: Identifier = Field(description="A signal type of the catalog")
    occurred_at: datetime = Field(description="Event time (timezone-aware, or UTC)")
    source: str = Field("", max_length=128, description="Touchpoint or system that saw it")
    attributes: dict[str, Any] = Field(default_factory=dict)


class Moment(_Model):
    """A detected event: something that matters about a customer, now."""

    moment_id: str = Field(description="Stable id: detector and the evidence that fired it")
    name: str
    customer_id: str
    occurred_at_ms: int = Field(description="Event time of the moment, ms since the epoch")
    urgency: float = Field(ge=0, le=1)
    half_life_s: float = Field(gt=0, description="Relevance halves every half-life")
    ttl_s: float = Field(gt=0, description="After this age the moment no longer triggers")
    detector_id: str
    evidence: tuple[str, ...] = Field(description="Event ids that made the moment")

    def relevance(self, now_ms: int) -> float:
        """Urgency decayed by age; zero once the moment is older than its useful life."""
        age_s = max(0.0, (now_ms - self.occurred_at_ms) / 1000.0)
        if age_s >= self.ttl_s:
            return 0.0
        return float(self.urgency * 0.5 ** (age_s / self.half_life_s))


class Action(_Model):
    """Something the business can do for a customer: a service need or an offer."""

    id: Identifier
    kind: Literal["service", "marketing"]
    channel: Identifier = Field(description="Channel the treatment goes out on")
    value: float = Field(ge=0, description="Business value V")
    lever: float = Field(1.0, ge=0, description="Default operator lever L")
    prior_propensity: float = Field(0.5, gt=0, lt=1, description="P before any outcome")
    moments: tuple[str, ...] = Field(
        (), description="Moments that make the action applicable; empty: inbound only"
    )
    eligibility: str | None = Field(None, description="Policy expression over profile and state")
    compete_per_channel: bool = Field(
        False, description="Competes only with actions of its own channel that say the same: "
        "that channel then gets a winner of its own besides the customer's main winner")
    message: str = Field("", description="Text or template id given to the channel")


@dataclass(frozen=True, slots=True)
class Candidate:
    """One scored candidate of a decision, every factor kept (a plain dataclass: thousands are
    made per batch, and pydantic's construction cost showed in the profile)."""

    action_id: str
    moment_id: str | None
    p: float
    c: float
    v: float
    l: float  # noqa: E741 - the design's own name for the lever factor
    score: float


class Removal(_Model):
    action_id: str
    policy: str
    reason: str


class Decision(_Model):
    """One arbitration for one customer: every candidate, every factor, and the winner."""

    customer_id: str
    decided_at_ms: int
    trigger: Literal["triggered", "inbound", "sweep", "emergency"]
    candidates: tuple[Candidate, ...]
    removed: tuple[Removal, ...] = ()
    winner: str | None = None
    also: tuple[str, ...] = Field((), description="Winners of per-channel competitions")
    reasons: tuple[str, ...] = ()


class Treatment(_Model):
    """A decided action for one customer, fired once per idempotency key."""

    treatment_id: str
    idempotency_key: str = Field(description="customer|action|moment")
    customer_id: str
    action_id: str
    channel: str
    payload: dict[str, Any]
    decided_at_ms: int
