"""The size limits a whole request of events must keep (``GrpcConfig``: events per request,
attributes per event, characters per string), checked before any of it is taken.

A request that breaks one is refused as a whole with ``RequestRejected`` naming the field
(``events[3].attributes``). Checked at the edge, and by a shard that takes a client's packed
events unopened by the router (``ShardActorBody.submit_packed``). Per-event checks against
the catalog (types, required attributes) are ``signals.validate_wire_event``'s, per event.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .config import GrpcConfig
from .errors import RequestRejected


def check_count(n: int, config: GrpcConfig, field: str) -> None:
    if n > config.max_events_per_request:
        raise RequestRejected(f"a request holds at most {config.max_events_per_request} "
                              f"{field}, got {n}; split it", field=field)


def too_long(value: str, limit: int, field: str) -> RequestRejected:
    return RequestRejected(f"{len(value)} characters, at most {limit}", field=field)


def too_many_attributes(n: int, config: GrpcConfig, i: int) -> RequestRejected:
    return RequestRejected(f"{n} attributes, at most {config.max_attributes_per_event}",
                           field=f"events[{i}].attributes")


# The checks name the offending field only once one fails: formatting every event's field
# names up front was most of the gateway's own work on a request (0.6 of its ~1 ms per 250
# events).

def check_wire_events(events: Sequence[Any], config: GrpcConfig) -> None:
    """Refuse the request if any event in the engine's wire form breaks a size limit. An
    item that is not a wire event at all is left to ``validate_wire_event``, which refuses
    that one event with its reason; only the sizes a whole request is refused for are
    checked here."""
    check_count(len(events), config, "events")
    limit = config.max_string_chars
    for i, event in enumerate(events):
        if not isinstance(event, list) or len(event) != 6:
            continue
        for index, name in ((2, "type"), (4, "source")):
            value = event[index]
            if isinstance(value, str) and len(value) > limit:
                raise too_long(value, limit, f"events[{i}].{name}")
        attributes = event[5]
        if not isinstance(attributes, dict):
            continue
        if len(attributes) > config.max_attributes_per_event:
            raise too_many_attributes(len(attributes), config, i)
        for name, value in attributes.items():
            if isinstance(name, str) and len(name) > limit:
                raise too_long(name, limit, f"events[{i}].attributes")
            if isinstance(value, str) and len(value) > limit:
                raise too_long(value, limit, f"events[{i}].attributes.{name}")
