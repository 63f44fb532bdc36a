"""One customer's contact and outcome history: plain data, bounded, snapshot to msgpack.

The contact policy counts in it (caps per window, cooldown, outcome-based suppression); the
shard records a contact when a treatment fires and an outcome when one comes back (including
``ignored`` when the response window of a treatment passes without an answer).

Bounds: at most ``max_contacts`` contacts (the oldest go first) and none older than
``max_age_days`` (dropped by ``trim``); at most ``MAX_OUTCOMES_PER_CONTACT`` outcomes each.
``max_age_days`` must cover the longest window any policy looks back over (30 days by default
rules; the default 90 leaves room).
"""

from __future__ import annotations

import bisect
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

SNAPSHOT_VERSION: Final = 1
MAX_OUTCOMES_PER_CONTACT: Final = 8
MS_PER_DAY: Final = 86_400_000

__all__ = ["MAX_OUTCOMES_PER_CONTACT", "SNAPSHOT_VERSION", "Contact", "ContactHistory"]


@dataclass(slots=True)
class Contact:
    """One treatment that fired. ``contact_class`` is marketing, service or safety."""

    treatment_id: str
    action_id: str
    channel: str
    contact_class: str
    sent_ms: int
    group: str | None = None
    outcomes: list[tuple[str, int]] = field(default_factory=list)  # (kind, at_ms), in order

    def has_outcome(self, kind: str) -> bool:
        return any(k == kind for k, _ in self.outcomes)

    def to_wire(self) -> list[Any]:
        return [self.treatment_id, self.action_id, self.channel, self.contact_class,
                self.sent_ms, self.group, [[k, t] for k, t in self.outcomes]]

    @classmethod
    def from_wire(cls, row: list[Any]) -> Contact:
        treatment_id, action_id, channel, contact_class, sent_ms, group, outcomes = row
        return cls(str(treatment_id), str(action_id), str(channel), str(contact_class),
                   int(sent_ms), None if group is None else str(group),
                   [(str(k), int(t)) for k, t in outcomes])


class ContactHistory:
    """Contacts in the order they were sent (oldest first), with their outcomes."""

    __slots__ = ("_by_id", "_last_sent", "_outcomes", "contacts", "max_age_ms", "max_contacts")

    def __init__(self, *, max_contacts: int = 200, max_age_days: float = 90.0) -> None:
        if max_contacts < 1 or max_age_days <= 0:
            raise ValueError("a contact history needs max_contacts >= 1 and max_age_days > 0")
        self.max_contacts = max_contacts
        self.max_age_ms = int(max_age_days * MS_PER_DAY)
        # oldest first; a list, not a deque: an empty deque holds a 64-slot block (~600 bytes
        # in every customer, most of whom have no contacts)
        self.contacts: list[Contact] = []
        self._by_id: dict[str, Contact] = {}
        # What the contact policy reads per candidate and rule, made when first read and then
        # kept up to date: each outcome kind's sorted times by (kind, action_id, None) and by
        # (kind, None, group) (suppression), and each action's latest send (cooldown). A scan
        # of every contact instead made a decision's cost grow with the customer's history.
        self._outcomes: dict[tuple[str, str | None, str | None], list[int]] | None = None
        self._last_sent: dict[str, int] | None = None

    def __len__(self) -> int:
        return len(self.contacts)

    def __iter__(self) -> Iterator[Contact]:
        return iter(self.contacts)

    # -- writing --------------------------------------------------------------------------
    def record_contact(self, contact: Contact) -> bool:
        """Add a fired treatment; ``False`` (and no change) if its id is already recorded."""
        if contact.treatment_id in self._by_id:
            return False
        if self.contacts and contact.sent_ms < self.contacts[-1].sent_ms:
            # a late record keeps the list in time order (after contacts sent at its time)
            bisect.insort_right(self.contacts, contact, key=lambda c: c.sent_ms)
        else:
            self.contacts.append(contact)
        self._by_id[contact.treatment_id] = contact
        if self._last_sent is not None:
            latest = self._last_sent.get(contact.action_id)
            if latest is None or contact.sent_ms > latest:
                self._last_sent[contact.action_id] = contact.sent_ms
        for kind, at_ms in contact.outcomes:  # one from a snapshot comes with its outcomes
            self._index_outcome(kind, contact, at_ms)
        self._forget(len(self.contacts) - self.max_contacts)
        return True

    def record_outcome(self, treatment_id: str, kind: str, at_ms: int) -> bool:
        """Attach an outcome to a contact; ``False`` if the contact is unknown (or forgotten)
        or already has this outcome kind (outcomes are idempotent per kind)."""
        contact = self._by_id.get(treatment_id)
        if contact is None or contact.has_outcome(kind):
            return False
        if len(contact.outcomes) >= MAX_OUTCOMES_PER_CONTACT:
            dropped, dropped_ms = contact.outcomes.pop(0)
            self._unindex_outcome(dropped, contact, dropped_ms)
        contact.outcomes.append((kind, at_ms))
        self._index_outcome(kind, contact, at_ms)
        return True

    def trim(self, now_ms: int) -> None:
        """Forget contacts older than ``max_age_days``."""
        horizon = now_ms - self.max_age_ms
        self._forget(bisect.bisect_left(self.contacts, horizon, key=lambda c: c.sent_ms))

    def _forget(self, oldest: int) -> None:
        """Drop the ``oldest`` first contacts (none if ``oldest`` <= 0)."""
        if oldest <= 0:
            return
        gone = self.contacts[:oldest]
        del self.contacts[:oldest]
        last_sent = self._last_sent
        for contact in gone:
            self._by_id.pop(contact.treatment_id, None)
            for kind, at_ms in contact.outcomes:
                self._unindex_outcome(kind, contact, at_ms)
            if last_sent is not None and last_sent.get(contact.action_id) == contact.sent_ms:
                # it was the action's latest send: look for the latest of those left (a scan,
                # but rare: an action sent since has a later contact, kept)
                latest = next((c.sent_ms for c in reversed(self.contacts)
                               if c.action_id == contact.action_id), None)
                if latest is None:
                    del last_sent[contact.action_id]
                else:
                    last_sent[contact.action_id] = latest

    def _index_outcome(self, kind: str, contact: Contact, at_ms: int) -> None:
        if self._outcomes is not None:
            for key in _outcome_keys(kind, contact):
                bisect.insort(self._outcomes.setdefault(key, []), at_ms)

    def _unindex_outcome(self, kind: str, contact: Contact, at_ms: int) -> None:
        if self._outcomes is not None:
            for key in _outcome_keys(kind, contact):
                times = self._outcomes[key]
                del times[bisect.bisect_left(times, at_ms)]
                if not times:
                    del self._outcomes[key]

    # -- reading --------------------------------------------------------------------------
    def get(self, treatment_id: str) -> Contact | None:
        return self._by_id.get(treatment_id)

    def count_since(self, since_ms: int, *, channel: str | None = None,
                    classes: Collection[str] | None = None) -> int:
        """Contacts sent at or after ``since_ms``, on ``channel`` (any if None) and of one of
        ``classes`` (any if None)."""
        n = 0
        for contact in reversed(self.contacts):
            if contact.sent_ms < since_ms:
                break
            if channel is not None and contact.channel != channel:
                continue
            if classes is not None and contact.contact_class not in classes:
                continue
            n += 1
        return n

    def last_sent_ms(self, action_id: str) -> int | None:
        last_sent = self._last_sent
        if last_sent is None:
            last_sent = self._last_sent = {}
            for contact in self.contacts:  # oldest first: the latest of each action stays
                last_sent[contact.action_id] = contact.sent_ms
        return last_sent.get(action_id)

    def outcome_times(self, kind: str, *, action_id: str | None = None,
                      group: str | None = None) -> list[int]:
        """Times of outcomes of ``kind`` on contacts of the action (or of the group), sorted."""
        if action_id is not None and group is not None:  # either's contacts, each once
            return sorted(t for c in self.contacts if c.action_id == action_id or c.group == group
                          for k, t in c.outcomes if k == kind)
        if self._outcomes is None:
            self._outcomes = {}
            for c in self.contacts:
                for k, t in c.outcomes:
                    self._index_outcome(k, c, t)
        return list(self._outcomes.get((kind, action_id, group), ()))

    # -- snapshots ------------------------------------------------------------------------
    def to_snapshot(self) -> dict[str, Any]:
        return {"v": SNAPSHOT_VERSION, "max_contacts": self.max_contacts,
                "max_age_ms": self.max_age_ms,
                "contacts": [c.to_wire() for c in self.contacts]}

    @classmethod
    def from_snapshot(cls, data: dict[str, Any]) -> ContactHistory:
        if data.get("v") != SNAPSHOT_VERSION:
            raise ValueError(f"contact history snapshot version {data.get('v')!r}, "
                             f"expected {SNAPSHOT_VERSION}")
        history = cls(max_contacts=int(data["max_contacts"]))
        history.max_age_ms = int(data["max_age_ms"])
        for row in data["contacts"]:
            history.record_contact(Contact.from_wire(row))
        return history


def _outcome_keys(kind: str, contact: Contact) -> tuple[tuple[str, str | None, str | None], ...]:
    """Where an outcome of ``kind`` on ``contact`` is found: by its action, and its group."""
    if contact.group is None:
        return ((kind, contact.action_id, None),)
    return (kind, contact.action_id, None), (kind, None, contact.group)
