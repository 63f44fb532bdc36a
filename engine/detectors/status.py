"""Change of a status attribute: fires when the value differs from the previous one.

``from_values``/``to_values`` narrow which transitions count. With ``key_attribute`` (e.g. an
order id) each key has its own status, keeping the ``max_keys`` most recently updated. A first
observation counts as a change only when ``to_values`` is given (an order first seen as
``delayed`` is news; a first terms version is not). Out-of-order events (older than the
status already known for their key) do not move the status.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field

from ..models import Moment
from ..signals import SignalRecord
from .base import CustomerView, Scalar, SignalDetector, require_attribute

_STATUS_TYPES = ("string", "integer", "boolean")


class StatusChangeDetector(SignalDetector):
    kind: Literal["status_change"] = "status_change"
    attribute: str = Field(description="Status attribute watched")
    from_values: list[Scalar] | None = Field(None, description="Only changes from these values")
    to_values: list[Scalar] | None = Field(None, description="Only changes to these values")
    key_attribute: str | None = Field(None, description="Track a status per key (e.g. order)")
    max_keys: int = Field(32, ge=1, le=1024, description="Keys remembered per customer")

    def check(self, signals: Mapping[str, Any], *, file: str) -> None:
        super().check(signals, file=file)
        require_attribute(signals, self.signal, self.attribute, _STATUS_TYPES, file=file,
                          item=self.id, field="attribute")
        if self.key_attribute is not None:
            require_attribute(signals, self.signal, self.key_attribute, (), file=file,
                              item=self.id, field="key_attribute")

    def _is_change(self, before: Any, after: Any) -> bool:
        if before == after:
            return False
        if before is None and self.to_values is None:
            return False
        if self.from_values is not None and before not in self.from_values:
            return False
        return self.to_values is None or after in self.to_values

    def detect(self, state: dict[str, Any], signal: SignalRecord,
               view: CustomerView) -> Moment | None:
        value = signal.attributes.get(self.attribute)
        if value is None or not self.matches(signal):
            return None
        key = "" if self.key_attribute is None else str(signal.attributes.get(self.key_attribute))
        known: dict[str, list[Any]] = state.setdefault("k", {})  # key -> [value, at_ms]
        before = known.get(key)
        if before is not None and signal.occurred_at_ms < before[1]:
            return None
        known.pop(key, None)
        known[key] = [value, signal.occurred_at_ms]  # re-inserted: dict order = recency
        if len(known) > self.max_keys:
            del known[next(iter(known))]
        if not self._is_change(None if before is None else before[0], value):
            return None
        if not self.cooled_down(state, signal.occurred_at_ms):
            return None
        return self.make_moment(state, signal, (signal.event_id,))
