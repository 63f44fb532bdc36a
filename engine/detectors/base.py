"""What every detector declares: identity, the moment it makes, and how it stays quiet.

A detector is a frozen spec and its own runtime. The customer hands it a small per-customer
``state`` dict (plain data: str keys, lists, numbers, strings; it snapshots as msgpack) and calls:

- ``detect(state, signal, view)`` for each signal of a type it listens to (``signal_types``);
- ``on_time(state, now_ms, view)`` when its timer is due (``next_due_ms(state)``, read from
  ``state["due"]``): absence, not-followed-by, milestone and calendar work this way;
- ``on_moment(state, moment)`` for combinations, with the moments of their member detectors;
- ``expire(state, horizon_ms)`` to drop what can no longer matter (silent customers).

Re-fire modes (``refire``): ``hysteresis`` fires when the condition turns true and re-arms only
once it has turned false again; ``interval`` fires whenever the condition holds and at least
``cooldown_s`` has passed since the last firing. ``cooldown_s`` applies in both modes. Kinds that
fire on an edge (status change, sequence, combination, timers) are edge-triggered by nature and
use ``cooldown_s`` only.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from ..errors import CatalogError
from ..models import Moment
from ..signals import SignalRecord

Scalar = str | int | float | bool
NUMERIC = ("number", "integer")
MAX_EVIDENCE = 16
COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
}


class CustomerView(Protocol):
    """What a detector may read of its customer besides its own state."""

    @property
    def customer_id(self) -> str: ...

    @property
    def profile(self) -> dict[str, Any]: ...


def require_attribute(signals: Mapping[str, Any], signal_type: str, attribute: str,
                      types: tuple[str, ...], *, file: str, item: str, field: str) -> None:
    """Raise ``CatalogError`` unless the signal type declares ``attribute`` of one of ``types``."""
    attr = signals[signal_type].attributes.get(attribute)
    if attr is None:
        raise CatalogError(f"signal {signal_type!r} has no attribute {attribute!r}",
                           file=file, item=item, field=field)
    if types and attr.type not in types:
        raise CatalogError(f"attribute {attribute!r} is {attr.type}, expected "
                           f"{' or '.join(types)}", file=file, item=item, field=field)


def advance_window(state: dict[str, Any], t: int, window_ms: int) -> int | None:
    """Move the detector's frontier T (the latest event time taken, ``state["T"]``) up to
    ``t`` and return the floor of the half-open window ``(T - window, T]``; ``None`` when
    ``t`` lies at or before that floor (too late to count)."""
    frontier = max(state.get("T", t), t)
    state["T"] = frontier
    floor = frontier - window_ms
    return None if t <= floor else floor


class SignalMatch(BaseModel):
    """A signal type, optionally narrowed by attribute values (equal, or one of a list)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    signal: str = Field(min_length=1, description="Signal type watched")
    where: dict[str, Scalar | list[Scalar]] = Field(
        default_factory=dict, description="Attribute filters: equal to a value or one of a list"
    )

    def matches(self, signal: SignalRecord) -> bool:
        if signal.type != self.signal:
            return False
        for name, want in self.where.items():
            value = signal.attributes.get(name)
            if isinstance(want, list):
                if value not in want:
                    return False
            elif value != want:
                return False
        return True

    def check_match(self, signals: Mapping[str, Any], *, file: str, item: str,
                    prefix: str = "") -> None:
        if self.signal not in signals:
            raise CatalogError(f"unknown signal type {self.signal!r}", file=file, item=item,
                               field=f"{prefix}signal")
        for name in self.where:
            require_attribute(signals, self.signal, name, (), file=file, item=item,
                              field=f"{prefix}where.{name}")


class BaseDetector(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    uses_timer: ClassVar[bool] = False

    id: str = Field(min_length=1, max_length=128)
    version: int = Field(1, ge=1, description="Bump when semantics change; resets state")
    moment: str = Field(min_length=1, description="Name of the moment it produces")
    urgency: float = Field(0.5, ge=0, le=1, description="Relevance of a fresh moment")
    half_life_s: float = Field(86_400.0, gt=0, description="Moment relevance halves this often")
    ttl_s: float | None = Field(None, gt=0, description="Useful life; default 4 half-lives")
    cooldown_s: float = Field(0.0, ge=0, description="Minimum event time between firings")
    refire: Literal["hysteresis", "interval"] = Field(
        "hysteresis", description="Re-fire after the condition reset, or after cooldown_s"
    )
    internal: bool = Field(
        False, description="The moment only feeds combinations: not stored, never decided on"
    )
    description: str = ""

    def signal_types(self) -> tuple[str, ...]:
        return ()

    def check(self, signals: Mapping[str, Any], *, file: str) -> None:
        """Cross-check against the catalog's signal types; raise ``CatalogError``."""
        for signal_type in self.signal_types():
            if signal_type not in signals:
                raise CatalogError(f"unknown signal type {signal_type!r}", file=file,
                                   item=self.id, field="signal")

    def detect(self, state: dict[str, Any], signal: SignalRecord,
               view: CustomerView) -> Moment | None:
        return None

    def on_time(self, state: dict[str, Any], now_ms: int, view: CustomerView) -> list[Moment]:
        return []

    def on_moment(self, state: dict[str, Any], moment: Moment) -> Moment | None:
        return None

    def next_due_ms(self, state: dict[str, Any]) -> int | None:
        due: int | None = state.get("due")
        return due

    def expire(self, state: dict[str, Any], horizon_ms: int) -> None:
        """Forget what started before ``horizon_ms`` and can no longer make a moment."""

    # -- firing ---------------------------------------------------------------------------
    def cooled_down(self, state: dict[str, Any], at_ms: int) -> bool:
        last = state.get("fired_ms")
        return last is None or at_ms - last >= self.cooldown_s * 1000

    def gate(self, state: dict[str, Any], condition: bool, at_ms: int) -> bool:
        """Apply the re-fire mode to a level condition: ``True`` when it should fire now."""
        if self.refire == "interval":
            return condition and self.cooled_down(state, at_ms)
        if not condition:
            state.pop("armed", None)  # armed is the default; only "disarmed" is stored
            return False
        if state.get("armed", True) is False:
            return False
        state["armed"] = False
        return self.cooled_down(state, at_ms)

    def emit(self, state: dict[str, Any], customer_id: str, at_ms: int, key: str,
             evidence: list[str] | tuple[str, ...]) -> Moment:
        state["fired_ms"] = at_ms
        return Moment(
            moment_id=f"{self.id}@{key}",
            name=self.moment,
            customer_id=customer_id,
            occurred_at_ms=at_ms,
            urgency=self.urgency,
            half_life_s=self.half_life_s,
            ttl_s=self.ttl_s if self.ttl_s is not None else 4 * self.half_life_s,
            detector_id=self.id,
            evidence=tuple(evidence[-MAX_EVIDENCE:]),
        )

    def make_moment(self, state: dict[str, Any], signal: SignalRecord,
                    evidence: list[str] | tuple[str, ...]) -> Moment:
        return self.emit(state, signal.customer_id, signal.occurred_at_ms, signal.event_id,
                         evidence)


class SignalDetector(BaseDetector, SignalMatch):
    """A detector fed by one signal type (optionally filtered by ``where``)."""

    def signal_types(self) -> tuple[str, ...]:
        return (self.signal,)

    def check(self, signals: Mapping[str, Any], *, file: str) -> None:
        self.check_match(signals, file=file, item=self.id)


class NumericSignalDetector(SignalDetector):
    """A detector over one numeric attribute of one signal type."""

    attribute: str = Field(description="Numeric attribute read")

    def check(self, signals: Mapping[str, Any], *, file: str) -> None:
        super().check(signals, file=file)
        require_attribute(signals, self.signal, self.attribute, NUMERIC, file=file,
                          item=self.id, field="attribute")

    def value_in_order(self, state: dict[str, Any], signal: SignalRecord) -> float | None:
        """The attribute's value if the signal matches and is not older than the last one
        taken (kept in ``state["seen_ms"]``): a series follows event time, not arrival."""
        value = signal.attributes.get(self.attribute)
        if value is None or signal.type != self.signal or (self.where
                                                           and not self.matches(signal)):
            return None  # (``matches`` only for a where: a call per event saved)
        t = signal.occurred_at_ms
        if t < state.get("seen_ms", t):
            return None
        state["seen_ms"] = t
        return float(value)
