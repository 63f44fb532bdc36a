"""What every detector declares: identity, the moment it makes, and how it stays quiet."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..errors import CatalogError
from ..models import Moment
from ..signals import SignalRecord


class BaseDetector(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1, max_length=128)
    version: int = Field(1, ge=1, description="Bump when semantics change; resets state")
    moment: str = Field(min_length=1, description="Name of the moment it produces")
    urgency: float = Field(0.5, ge=0, le=1, description="Relevance of a fresh moment")
    half_life_s: float = Field(86_400.0, gt=0, description="Moment relevance halves this often")
    ttl_s: float | None = Field(None, gt=0, description="Useful life; default 4 half-lives")
    cooldown_s: float = Field(0.0, ge=0, description="Minimum event time between firings")

    def signal_types(self) -> tuple[str, ...]:
        raise NotImplementedError

    def check(self, signals: Mapping[str, Any], *, file: str) -> None:
        """Cross-check against the catalog's signal types; raise ``CatalogError``."""
        for signal_type in self.signal_types():
            if signal_type not in signals:
                raise CatalogError(f"unknown signal type {signal_type!r}", file=file,
                                   item=self.id, field="signal")

    def detect(self, state: dict[str, Any], signal: SignalRecord) -> Moment | None:
        raise NotImplementedError

    def cooled_down(self, state: dict[str, Any], at_ms: int) -> bool:
        last = state.get("fired_ms")
        return last is None or at_ms - last >= self.cooldown_s * 1000

    def make_moment(self, state: dict[str, Any], signal: SignalRecord,
                    evidence: tuple[str, ...]) -> Moment:
        state["fired_ms"] = signal.occurred_at_ms
        return Moment.model_construct(
            moment_id=f"{self.id}@{signal.event_id}",
            name=self.moment,
            customer_id=signal.customer_id,
            occurred_at_ms=signal.occurred_at_ms,
            urgency=self.urgency,
            half_life_s=self.half_life_s,
            ttl_s=self.ttl_s if self.ttl_s is not None else 4 * self.half_life_s,
            detector_id=self.id,
            evidence=evidence,
        )
