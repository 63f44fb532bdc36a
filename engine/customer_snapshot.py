"""Plain-data forms of the moments a customer snapshot holds: a moment travels as a list in
field order (compact: a customer may hold dozens). ``SNAPSHOT_VERSION`` changes when the layout
does; version 1 also held the customer's recent decisions, which the decision audit keeps now
(a version-1 snapshot still loads, its decisions ignored). Version 3 keeps 8-byte digests of
the recent event ids, not the ids (versions 1 and 2 load, their ids digested).
"""

from __future__ import annotations

import sys
from typing import Any

from .models import Moment

SNAPSHOT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)

_MOMENT_FIELDS = ("moment_id", "name", "customer_id", "occurred_at_ms", "urgency",
                  "half_life_s", "ttl_s", "detector_id", "evidence")


def moment_to(moment: Moment) -> list[Any]:
    return [moment.moment_id, moment.name, moment.customer_id, moment.occurred_at_ms,
            moment.urgency, moment.half_life_s, moment.ttl_s, moment.detector_id,
            list(moment.evidence)]


def moment_from(data: list[Any], customer_id: str) -> Moment:
    """A moment of ``customer_id``'s snapshot. Its customer id is that string, and its name and
    detector id are interned: as unpacked, each moment held its own copies of the three (~170
    of a moment's ~340 bytes; 64 moments are a busy customer's largest state)."""
    if len(data) != len(_MOMENT_FIELDS):
        raise ValueError(f"a snapshot moment has {len(_MOMENT_FIELDS)} fields, got {len(data)}")
    moment_id, name, owner, occurred_at_ms, urgency, half_life_s, ttl_s, detector_id, \
        evidence = data
    return Moment(moment_id, sys.intern(name), customer_id if owner == customer_id else owner,
                  occurred_at_ms, urgency, half_life_s, ttl_s, sys.intern(detector_id),
                  tuple(evidence))

