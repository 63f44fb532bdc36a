"""Consent: per-channel opt-in/opt-out and do-not-contact, honoured always.

A *scope* names what a consent covers: ``sms`` (the channel, any purpose), ``email:marketing``
(one purpose on one channel), ``*:marketing`` (a purpose on every channel) or ``*``. Purposes are
``marketing`` and ``service`` (safety treatments count as service).

Rules, in order: do-not-contact removes everything; any opt-out whose scope covers the channel
and purpose removes it (an opt-out is never overridden by a broader or narrower opt-in); where
the configuration requires an opt-in for a covering scope, there must be an opt-in covering it.
Neither an emergency nor a lever bypasses consent.

Check twice: at decision time (``PolicyChain``) and again right before a send (``check``, with
the consent as it is then), because an opt-out may arrive between the two, e.g. while a
treatment waits out quiet hours.

Where consent comes from: ``ConsentRecord.from_profile`` reads ``profile['do_not_contact']``
and either a ``profile['consent']`` mapping ``{scope: bool}`` or flat keys ``consent_<scope>``
(``consent_sms``, ``consent_email_marketing``, ``consent_all_marketing`` for ``*:marketing``)
as a consent signal with ``updates_profile`` leaves them.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .policy_config import ConsentConfig

__all__ = ["ConsentPolicy", "ConsentRecord", "covering_scopes", "purpose_of"]

_PURPOSES = ("marketing", "service")


def purpose_of(contact_class: str) -> str:
    return "marketing" if contact_class == "marketing" else "service"


@functools.cache  # a few channels times two purposes; asked for every candidate
def covering_scopes(channel: str, purpose: str) -> tuple[str, ...]:
    """Every scope that covers a send on ``channel`` for ``purpose``."""
    return (channel, f"{channel}:{purpose}", f"*:{purpose}", "*")


def _scope_from_key(key: str) -> str | None:
    if not key.startswith("consent_") or len(key) <= len("consent_"):
        return None
    rest = key[len("consent_"):]
    channel, _, purpose = rest.rpartition("_")
    if channel and purpose in _PURPOSES:
        return f"{'*' if channel == 'all' else channel}:{purpose}"
    return "*" if rest == "all" else rest


@dataclass(slots=True)
class ConsentRecord:
    do_not_contact: bool = False
    opted_in: set[str] = field(default_factory=set)
    opted_out: set[str] = field(default_factory=set)

    def set(self, scope: str, opted_in: bool) -> None:
        """The customer's latest word on one scope replaces their earlier word on it."""
        (self.opted_out if opted_in else self.opted_in).discard(scope)
        (self.opted_in if opted_in else self.opted_out).add(scope)

    @classmethod
    def from_profile(cls, profile: Mapping[str, Any]) -> ConsentRecord:
        record = cls(do_not_contact=bool(profile.get("do_not_contact", False)))
        items: Iterable[tuple[str, Any]]
        nested = profile.get("consent")
        if isinstance(nested, Mapping):
            items = ((str(k), v) for k, v in nested.items())
        else:
            items = ((s, v) for k, v in profile.items() if (s := _scope_from_key(k)) is not None)
        for scope, value in items:
            if isinstance(value, bool):
                record.set(scope, value)
            elif isinstance(value, str) and value.lower() in ("opt_in", "opt_out"):
                record.set(scope, value.lower() == "opt_in")
        return record

    def to_snapshot(self) -> dict[str, Any]:
        return {"dnc": self.do_not_contact, "in": sorted(self.opted_in),
                "out": sorted(self.opted_out)}

    @classmethod
    def from_snapshot(cls, data: Mapping[str, Any]) -> ConsentRecord:
        return cls(bool(data["dnc"]), set(data["in"]), set(data["out"]))


class ConsentPolicy:
    name = "consent"

    def __init__(self, config: ConsentConfig | None = None) -> None:
        self.require_opt_in = frozenset((config or ConsentConfig()).require_opt_in)

    def check(self, record: ConsentRecord, channel: str, contact_class: str) -> str | None:
        """``None`` if the customer may be contacted on ``channel`` for this class of
        treatment, else the reason."""
        if record.do_not_contact:
            return "customer is on do-not-contact"
        purpose = purpose_of(contact_class)
        scopes = covering_scopes(channel, purpose)
        for scope in scopes:
            if scope in record.opted_out:
                return f"opted out of {scope} (sending {purpose} on {channel})"
        needed = [s for s in scopes if s in self.require_opt_in]
        if needed and not any(s in record.opted_in for s in scopes):
            return f"no opt-in for {needed[0]} (required for {purpose} on {channel})"
        return None
