"""The domain's types: pydantic models where data comes in from outside (signals, catalog
actions), ``@record`` types (slotted dataclasses, ``engine.records``) for what the engine itself
makes on the hot path (moments, candidates, removals, decisions, treatments: thousands per
batch, where pydantic's construction and dumping showed in the profile).

Inside the engine, events travel as plain wire lists (``engine.codec``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .records import record

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


@record
class Moment:
    """A detected event: something that matters about a customer, now.

    A record, not a pydantic model: detectors make one per firing on the hot path, from
    fields they have already checked (catalog values, event fields).
    """

    moment_id: str  # stable id: detector and the evidence that fired it
    name: str
    customer_id: str
    occurred_at_ms: int  # event time of the moment, ms since the epoch
    urgency: float  # 0..1
    half_life_s: float  # relevance halves every half-life
    ttl_s: float  # after this age the moment no longer triggers
    detector_id: str
    evidence: tuple[str, ...]  # event ids that made the moment

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


@record
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


@record
class Removal:
    """A candidate a policy took out of a decision, and why."""

    action_id: str
    policy: str
    reason: str

    def to_wire(self) -> dict[str, str]:
        return {"action_id": self.action_id, "policy": self.policy, "reason": self.reason}


@record
class Decision:
    """One arbitration for one customer: every candidate, every factor, and the winner."""

    customer_id: str
    decided_at_ms: int
    trigger: str  # "triggered" | "inbound" | "sweep" | "emergency"
    candidates: tuple[Candidate, ...]
    removed: tuple[Removal, ...] = ()
    winner: str | None = None
    also: tuple[str, ...] = ()  # winners of per-channel competitions
    reasons: tuple[str, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        """Plain data (the decision audit keeps it, Explain shows it)."""
        return {"customer_id": self.customer_id, "decided_at_ms": self.decided_at_ms,
                "trigger": self.trigger,
                "candidates": [{"action_id": c.action_id, "moment_id": c.moment_id, "p": c.p,
                                "c": c.c, "v": c.v, "l": c.l, "score": c.score}
                               for c in self.candidates],
                "removed": [r.to_wire() for r in self.removed], "winner": self.winner,
                "also": list(self.also), "reasons": list(self.reasons)}


TREATMENT_FIELDS = ("treatment_id", "idempotency_key", "customer_id", "action_id", "channel",
                    "payload", "decided_at_ms")


@record
class Treatment:
    """A decided action for one customer, fired once per idempotency key (``customer|action|
    moment``). Channels get it as is; ``to_wire`` is its one plain-data form (ledger, outbox,
    JSONL line)."""

    treatment_id: str
    idempotency_key: str
    customer_id: str
    action_id: str
    channel: str
    payload: dict[str, Any]
    decided_at_ms: int

    def to_wire(self) -> dict[str, Any]:
        return {"treatment_id": self.treatment_id, "idempotency_key": self.idempotency_key,
                "customer_id": self.customer_id, "action_id": self.action_id,
                "channel": self.channel, "payload": self.payload,
                "decided_at_ms": self.decided_at_ms}

    @classmethod
    def from_wire(cls, data: Any) -> Treatment:
        """Back from ``to_wire`` (a ledger row, a deferred send); ``ValueError`` names the
        missing or mistyped field."""
        if not isinstance(data, dict):
            raise ValueError(f"a treatment is a mapping, got {type(data).__name__}")
        for name in TREATMENT_FIELDS:
            value = data.get(name)
            expected = (dict if name == "payload" else int if name == "decided_at_ms"
                        else str)
            if not isinstance(value, expected) or isinstance(value, bool):
                raise ValueError(f"treatment field {name!r}: expected {expected.__name__}, "
                                 f"got {value!r}")
        return cls(**{name: data[name] for name in TREATMENT_FIELDS})
