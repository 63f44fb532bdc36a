"""Plain-data forms of the moments a customer snapshot holds: a moment travels as a list in
field order (compact: a customer may hold dozens). ``SNAPSHOT_VERSION`` changes when the layout
does; version 1 also held the customer's recent decisions, which the decision audit keeps now
(a version-1 snapshot still loads, its decisions ignored). Version 3 keeps 8-byte digests of
the recent event ids, not the ids (versions 1 and 2 load, their ids digested), and its moments
leave out their customer's id, which is the snapshot's own (versions 1 and 2 repeat it).
"""

from __future__ import annotations

import sys
from typing import Any

from .models import Moment

SNAPSHOT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)

_MOMENT_FIELDS = ("moment_id", "name", "occurred_at_ms", "urgency", "half_life_s", "ttl_s",
                  "detector_id", "evidence")  # and, before version 3, customer_id second


_SHARED_FLOATS: dict[float, float] = {}  # a moment's urgency, half-life and TTL: catalog values
_MAX_SHARED_FLOATS = 4096


def _shared(value: float) -> float:
    """One float object per value among restored moments (each unpacked float is 24 bytes)."""
    kept = _SHARED_FLOATS.get(value)
    if kept is None:
        if len(_SHARED_FLOATS) >= _MAX_SHARED_FLOATS:
            return value
        kept = _SHARED_FLOATS[value] = value
    return kept


def moment_to(moment: Moment) -> list[Any]:
    """A moment of its customer's snapshot (which holds the customer's id once)."""
    return [moment.moment_id, moment.name, moment.occurred_at_ms, moment.urgency,
            moment.half_life_s, moment.ttl_s, moment.detector_id, list(moment.evidence)]


def moment_from(data: list[Any], customer_id: str) -> Moment:
    """A moment of ``customer_id``'s snapshot, sharing that string; its name and detector id
    are interned and its catalog floats shared. Unpacked, each moment held its own copies
    (~240 of a moment's ~340 bytes; 64 moments are a busy customer's largest state)."""
    if len(data) == len(_MOMENT_FIELDS) + 1:  # versions 1 and 2: the customer's id second
        data = [data[0], data[1], *data[3:]]
    if len(data) != len(_MOMENT_FIELDS):
        raise ValueError(f"a snapshot moment has {len(_MOMENT_FIELDS)} fields, got {len(data)}")
    moment_id, name, occurred_at_ms, urgency, half_life_s, ttl_s, detector_id, evidence = data
    return Moment(moment_id, sys.intern(name), customer_id, occurred_at_ms, _shared(urgency),
                  _shared(half_life_s), _shared(ttl_s), sys.intern(detector_id),
                  tuple(evidence))

