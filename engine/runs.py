"""Emergency runs: select customers by profile, inject a moment into each, at a bounded rate.

``PopulationFilter`` selects by hot categorical columns (zip codes, regions, segments,
countries, any other declared categorical column) and set columns (products held): clauses are
ANDed, the values within one clause ORed. It compiles to a numpy mask over ``HotColumns``
(``select``), checks one profile in plain Python (``matches_profile``, same normalization), and
renders as a safe policy expression (``to_expression``) for customers or attributes outside
the columns; ``where`` adds a policy expression over non-hot attributes that the shard
evaluates per selected customer (compile it with ``policies.expressions`` at submission).

Each customer selected still goes through policies and arbitration on its own. The injected
moment's id is the run's ``dedup_key`` (default: ``run:<run id>``), so two runs sharing a dedup
key (the updates of one weather incident) make the same treatment idempotency key for a
customer and the ledger fires it once. ``Throttle`` is a token bucket on an injected clock.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .errors import ConfigError
from .hot_columns import HotColumns, HotColumnsSpec, normalize_value
from .models import Moment

__all__ = [
    "EmergencyRun", "PopulationFilter", "RunProgress", "RunState", "RunsConfig", "Throttle",
    "new_run_id",
]

Values = tuple[str, ...]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PopulationFilter(_Frozen):
    zips: Values = Field((), description="Zip codes (column 'zip')")
    regions: Values = Field((), description="Regions/subdivisions (column 'region')")
    segments: Values = Field((), description="Segments (column 'segment')")
    countries: Values = Field((), description="ISO countries (column 'country')")
    products_any: Values = Field((), description="Holds any of these (set column 'products')")
    attributes: dict[str, Values] = Field(
        default_factory=dict, description="Other categorical columns: one of the values")
    where: str | None = Field(None, max_length=2000,
                              description="Policy expression over non-hot attributes")
    everyone: bool = Field(False, description="Must be set to select without any clause")

    @model_validator(mode="after")
    def _not_empty(self) -> PopulationFilter:
        if not self.everyone and not self.clauses() and not self.products_any and not self.where:
            raise ValueError("a population filter needs a clause (or everyone: true)")
        return self

    def clauses(self) -> dict[str, Values]:
        """Categorical column -> accepted values."""
        named = {"zip": self.zips, "region": self.regions, "segment": self.segments,
                 "country": self.countries, **self.attributes}
        return {column: values for column, values in named.items() if values}

    def check(self, spec: HotColumnsSpec) -> None:
        """Raise ``ConfigError`` if a clause names a column the shard does not keep."""
        for column in self.clauses():
            if spec.kind_of(column) != "categorical":
                raise ConfigError(f"{column!r} is not a categorical hot column",
                                  source="population", field=column)
        if self.products_any and spec.kind_of("products") != "set":
            raise ConfigError("'products' is not a set hot column", source="population",
                              field="products_any")

    def select(self, columns: HotColumns, start: int = 0,
               stop: int | None = None) -> npt.NDArray[np.int64]:
        """Rows in ``[start, stop)`` matching the hot clauses (``where`` is left to the shard)."""
        stop = columns.size if stop is None else min(stop, columns.size)
        sl = slice(start, stop)
        mask = columns.alive[sl].copy()
        for column, values in self.clauses().items():
            mask &= columns.code_lookup(column, values)[columns.codes(column)[sl]]
        if self.products_any:
            bits, _ = columns.bits_for("products", self.products_any)
            mask &= (columns.set_masks("products")[sl] & np.uint64(bits)) != 0
        return np.flatnonzero(mask).astype(np.int64) + start

    def matches_profile(self, profile: Mapping[str, Any], spec: HotColumnsSpec) -> bool:
        """The hot clauses for one profile, normalized as in the columns (not ``where``)."""
        by_name = {c.name: c for c in spec.categorical}
        for column, values in self.clauses().items():
            cat = by_name[column]
            have = normalize_value(profile.get(cat.source_attribute), cat.normalize)
            if have is None or have not in {normalize_value(v, cat.normalize) for v in values}:
                return False
        if self.products_any:
            held = profile.get(_set_attribute(spec))
            items = held.split(",") if isinstance(held, str) else held or ()
            if not {str(i).strip() for i in items} & set(self.products_any):
                return False
        return True

    def to_expression(self, spec: HotColumnsSpec) -> str:
        """The filter as a policy expression over ``profile`` (set values must be lists)."""
        by_name = {c.name: c for c in spec.categorical}
        parts = [f"profile.{by_name[c].source_attribute if c in by_name else c} in "
                 f"{sorted(values)!r}" for c, values in self.clauses().items()]
        if self.products_any:
            attr = _set_attribute(spec)
            parts.append("(" + " or ".join(f"{p!r} in profile.{attr}"
                                           for p in sorted(self.products_any)) + ")")
        if self.where:
            parts.append(f"({self.where})")
        return " and ".join(parts) if parts else "True"


def _set_attribute(spec: HotColumnsSpec) -> str:
    return next((c.source_attribute for c in spec.sets if c.name == "products"), "products")


def new_run_id(prefix: str = "run") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class EmergencyRun(_Frozen):
    """An operator's (or a feed's) request to inject a moment into a population."""

    run_id: str = Field(min_length=1, max_length=200)
    population: PopulationFilter
    moment: str = Field(min_length=1, description="Name of the moment injected")
    urgency: float = Field(1.0, ge=0, le=1)
    half_life_s: float = Field(21_600.0, gt=0)
    ttl_s: float | None = Field(None, gt=0, description="Useful life; default 4 half-lives")
    bypass_soft_caps: bool = Field(False, description="Service/safety: skip soft contact caps")
    rate_per_s: float = Field(200.0, gt=0, description="Customers injected per second, in all")
    dedup_key: str | None = Field(None, max_length=200,
                                  description="Runs sharing it treat a customer once")
    purpose: str = Field("", max_length=500)
    requested_by: str = Field("", max_length=200)

    @property
    def moment_id(self) -> str:
        """``dedup_key`` when given (e.g. ``nws:<incident>``, a calendar ``<detector>@<date>``,
        the id the per-customer detector would make), else ``run:<run_id>``."""
        return self.dedup_key or f"run:{self.run_id}"

    def moment_for(self, customer_id: str, now_ms: int) -> Moment:
        return Moment(
            moment_id=self.moment_id, name=self.moment, customer_id=customer_id,
            occurred_at_ms=now_ms, urgency=self.urgency, half_life_s=self.half_life_s,
            ttl_s=self.ttl_s if self.ttl_s is not None else 4 * self.half_life_s,
            detector_id=f"run:{self.run_id}", evidence=())

    def shard_rate(self, num_shards: int) -> float:
        """Each shard's share of the run's rate."""
        return self.rate_per_s / max(1, num_shards)


class RunsConfig(_Frozen):
    """Hang under ``EngineConfig.runs``."""

    default_rate_per_s: float = Field(200.0, gt=0, description="Rate of runs that give none")
    max_rate_per_s: float = Field(5_000.0, gt=0, description="Higher requested rates are refused")
    burst_s: float = Field(1.0, gt=0, description="Token-bucket depth, in seconds of rate")
    max_active_runs: int = Field(8, gt=0, description="Runs in progress at once")
    keep_finished: int = Field(100, ge=0, description="Finished runs kept for `shush runs`")


class RunState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    CANCELLED = "cancelled"
    FAILED = "failed"


@dataclass(slots=True)
class RunProgress:
    """Counts of one run (or one shard's part of it); ``combine`` adds the shards up."""

    run_id: str
    state: RunState = RunState.PENDING
    selected: int = 0  # matched the filter
    injected: int = 0  # moment given to the customer
    treated: int = 0  # a treatment fired
    skipped: int = 0  # already treated for the dedup key, or `where` said no
    errors: int = 0
    started_ms: int | None = None
    finished_ms: int | None = None

    @property
    def remaining(self) -> int:
        return max(0, self.selected - self.injected - self.skipped - self.errors)

    def to_wire(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        return data

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> RunProgress:
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["state"] = RunState(values.get("state", RunState.PENDING))
        return cls(**values)

    @classmethod
    def combine(cls, run_id: str, parts: Iterable[RunProgress]) -> RunProgress:
        parts = list(parts)
        total = cls(run_id)
        for part in parts:
            for name in ("selected", "injected", "treated", "skipped", "errors"):
                setattr(total, name, getattr(total, name) + getattr(part, name))
        starts = [p.started_ms for p in parts if p.started_ms is not None]
        total.started_ms = min(starts) if starts else None
        states = {p.state for p in parts}
        for state in (RunState.FAILED, RunState.CANCELLED, RunState.RUNNING):
            if state in states:
                total.state = state
                break
        else:
            total.state = RunState.DONE if states == {RunState.DONE} else RunState.PENDING
        if total.state in (RunState.DONE, RunState.CANCELLED, RunState.FAILED):
            ends = [p.finished_ms for p in parts if p.finished_ms is not None]
            total.finished_ms = max(ends) if ends else None
        return total


class Throttle:
    """A token bucket: ``rate_per_s`` tokens a second, at most ``burst`` in hand."""

    __slots__ = ("_at_ms", "_tokens", "burst", "rate_per_s")

    def __init__(self, rate_per_s: float, burst: float, now_ms: int) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("a throttle needs rate_per_s > 0 and burst >= 1")
        self.rate_per_s, self.burst = rate_per_s, float(burst)
        self._tokens, self._at_ms = float(burst), now_ms

    def _refill(self, now_ms: int) -> None:
        if now_ms > self._at_ms:
            self._tokens = min(self.burst,
                               self._tokens + (now_ms - self._at_ms) * self.rate_per_s / 1000)
            self._at_ms = now_ms

    def take(self, wanted: int, now_ms: int) -> int:
        """Take up to ``wanted`` tokens now; returns how many were granted."""
        self._refill(now_ms)
        granted = min(wanted, int(self._tokens + 1e-9))
        self._tokens -= granted
        return max(0, granted)

    def wait_ms(self, wanted: int, now_ms: int) -> int:
        """Milliseconds until ``wanted`` (at most ``burst``) tokens are in hand."""
        self._refill(now_ms)
        missing = min(float(wanted), self.burst) - self._tokens
        return 0 if missing <= 0 else math.ceil(missing * 1000 / self.rate_per_s)
