"""The per-customer contact history: counting, outcomes, bounds and the msgpack round trip."""

from __future__ import annotations

import random

import msgpack
import pytest

from shush.engine.contact_history import MAX_OUTCOMES_PER_CONTACT, Contact, ContactHistory

DAY_MS = 86_400_000


def test_counts_and_lookups() -> None:
    h = ContactHistory()
    assert h.record_contact(Contact("t1", "loan", "email", "marketing", 100, "credit"))
    assert not h.record_contact(Contact("t1", "loan", "email", "marketing", 100))
    h.record_contact(Contact("t2", "alert", "sms", "service", 300))
    h.record_contact(Contact("t0", "card", "sms", "marketing", 50, "credit"))  # late, sorted in
    assert [c.treatment_id for c in h] == ["t0", "t1", "t2"]
    assert h.count_since(100) == 2 and h.count_since(101) == 1 and h.count_since(0) == 3
    assert h.count_since(0, channel="sms") == 2
    assert h.count_since(0, classes=("marketing",)) == 2
    assert h.last_sent_ms("loan") == 100 and h.last_sent_ms("none") is None
    assert h.record_outcome("t1", "rejected", 500)
    assert not h.record_outcome("t1", "rejected", 600)  # idempotent per kind
    assert not h.record_outcome("t9", "rejected", 600)
    h.record_outcome("t0", "rejected", 400)
    assert h.outcome_times("rejected", group="credit") == [400, 500]
    assert h.outcome_times("rejected", action_id="loan") == [500]


def test_bounded_by_count_age_and_outcomes() -> None:
    h = ContactHistory(max_contacts=3, max_age_days=10)
    for k in range(5):
        h.record_contact(Contact(f"t{k}", "a", "sms", "service", k * DAY_MS))
    assert [c.treatment_id for c in h] == ["t2", "t3", "t4"] and h.get("t0") is None
    h.trim(13 * DAY_MS)
    assert [c.treatment_id for c in h] == ["t3", "t4"]
    for k in range(MAX_OUTCOMES_PER_CONTACT + 2):
        h.record_outcome("t4", f"kind{k}", k)
    outcomes = h.get("t4").outcomes  # type: ignore[union-attr]
    assert len(outcomes) == MAX_OUTCOMES_PER_CONTACT and outcomes[0] == ("kind2", 2)
    with pytest.raises(ValueError):
        ContactHistory(max_contacts=0)


def test_snapshot_round_trip_through_msgpack() -> None:
    h = ContactHistory(max_contacts=50, max_age_days=35)
    h.record_contact(Contact("t1", "loan", "email", "marketing", 100, "credit"))
    h.record_contact(Contact("t2", "alert", "sms", "safety", 200))
    h.record_outcome("t1", "opened", 150)
    h.record_outcome("t1", "accepted", 160)
    data = msgpack.unpackb(msgpack.packb(h.to_snapshot()))
    again = ContactHistory.from_snapshot(data)
    assert list(again) == list(h)
    assert (again.max_contacts, again.max_age_ms) == (50, 35 * DAY_MS)
    assert again.get("t1") == h.get("t1")
    with pytest.raises(ValueError, match="version"):
        ContactHistory.from_snapshot({**data, "v": 99})


def _outcome_times_by_scan(h: ContactHistory, kind: str, action_id: str | None,
                           group: str | None) -> list[int]:
    """The definition: every contact of the action (or group), every outcome of the kind."""
    return sorted(t for c in h if c.action_id == action_id or (group and c.group == group)
                  for k, t in c.outcomes if k == kind)


KINDS = ("ignored", "rejected", *(f"kind{k}" for k in range(MAX_OUTCOMES_PER_CONTACT)))


def test_outcome_times_and_last_sends_stay_right_through_every_change() -> None:
    rng = random.Random(5)
    h = ContactHistory(max_contacts=12, max_age_days=5)
    for step in range(3000):
        roll = rng.random()
        if roll < 0.3:
            h.record_contact(Contact(  # some come with outcomes already, as from a snapshot
                f"t{step}", rng.choice("abcdef"), "sms", "marketing",
                rng.randrange(0, 10 * DAY_MS), rng.choice(("g", None)),
                [(kind, rng.randrange(0, 10 * DAY_MS)) for kind in rng.sample(KINDS, 2)]
                if rng.random() < 0.2 else []))
        elif roll < 0.8 and len(h):
            contact = rng.choice(list(h))
            h.record_outcome(contact.treatment_id, rng.choice(KINDS),  # up to the cap
                             rng.randrange(0, 10 * DAY_MS))
        elif roll < 0.85:
            h.trim(rng.randrange(0, 12 * DAY_MS))
        elif roll < 0.9:  # a snapshot taken now comes back with the same outcomes
            h = ContactHistory.from_snapshot(msgpack.unpackb(msgpack.packb(h.to_snapshot())))
        kind, action, group = (rng.choice(KINDS), rng.choice(("a", "b", "f", None)),
                               rng.choice(("g", None)))
        assert h.outcome_times(kind, action_id=action, group=group) == \
            _outcome_times_by_scan(h, kind, action, group), step
        sent = rng.choice("abcdefg")
        assert h.last_sent_ms(sent) == max((c.sent_ms for c in h if c.action_id == sent),
                                           default=None), step
