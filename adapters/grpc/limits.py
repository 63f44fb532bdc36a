"""Checks a whole request must pass at the edge before any of it reaches the engine.

A request that breaks a limit (too many events, too many attributes, too long a string) or
carries an invalid outcome is refused as a whole with ``INVALID_ARGUMENT`` naming the field
(``events[3].attributes``, ``outcomes[0].outcome``): nothing of it is taken. Per-event checks
against the catalog (types, required attributes) stay in the router, per event.
Messages above ``max_message_bytes`` never get here: grpc refuses them (``RESOURCE_EXHAUSTED``).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from ...engine.config import GrpcConfig
from ...engine.errors import EventRejected
from ...engine.signals import MAX_ID_LENGTH
from . import shush_pb2 as pb
from .gateway import REPORTABLE_OUTCOMES


class RequestRejected(EventRejected):
    """A whole request refused at the edge; ``field`` names the offending part."""

    def __init__(self, reason: str, *, field: str) -> None:
        super().__init__(reason, field=field)
        self.args = (f"{field}: {reason}",)


def check_count(n: int, config: GrpcConfig, field: str) -> None:
    if n > config.max_events_per_request:
        raise RequestRejected(f"a request holds at most {config.max_events_per_request} "
                              f"{field}, got {n}; split it", field=field)


def _too_long(value: str, limit: int, field: str) -> RequestRejected:
    return RequestRejected(f"{len(value)} characters, at most {limit}", field=field)


def _too_many_attributes(n: int, config: GrpcConfig, i: int) -> RequestRejected:
    return RequestRejected(f"{n} attributes, at most {config.max_attributes_per_event}",
                           field=f"events[{i}].attributes")


# The checks below name the offending field only once one fails: formatting every event's
# field names up front was most of the gateway's own work on a request (0.6 of its ~1 ms
# per 250 events).

def check_events(events: Sequence[pb.Event], config: GrpcConfig) -> None:
    """Refuse the request if any event breaks a size limit."""
    check_count(len(events), config, "events")
    limit = config.max_string_chars
    for i, event in enumerate(events):
        for name in ("type", "source"):
            if len(value := getattr(event, name)) > limit:
                raise _too_long(value, limit, f"events[{i}].{name}")
        if len(event.attributes) > config.max_attributes_per_event:
            raise _too_many_attributes(len(event.attributes), config, i)
        for name, attribute in event.attributes.items():
            if len(name) > limit:
                raise _too_long(name, limit, f"events[{i}].attributes")
            if attribute.WhichOneof("kind") == "text" and len(attribute.text) > limit:
                raise _too_long(attribute.text, limit, f"events[{i}].attributes.{name}")


def check_wire_events(events: Sequence[Any], config: GrpcConfig) -> None:
    """``check_events`` for events in the engine's wire form (``SubmitPacked``). An item
    that is not a wire event at all is left to the router, which refuses that one event with
    its reason; only the sizes a whole request is refused for are checked here."""
    check_count(len(events), config, "events")
    limit = config.max_string_chars
    for i, event in enumerate(events):
        if not isinstance(event, list) or len(event) != 6:
            continue
        for index, name in ((2, "type"), (4, "source")):
            value = event[index]
            if isinstance(value, str) and len(value) > limit:
                raise _too_long(value, limit, f"events[{i}].{name}")
        attributes = event[5]
        if not isinstance(attributes, dict):
            continue
        if len(attributes) > config.max_attributes_per_event:
            raise _too_many_attributes(len(attributes), config, i)
        for name, value in attributes.items():
            if isinstance(name, str) and len(name) > limit:
                raise _too_long(name, limit, f"events[{i}].attributes")
            if isinstance(value, str) and len(value) > limit:
                raise _too_long(value, limit, f"events[{i}].attributes.{name}")


def _check_id(value: str, field: str) -> None:
    if not 0 < len(value) <= MAX_ID_LENGTH:
        raise RequestRejected(f"must be a non-empty string of at most {MAX_ID_LENGTH} "
                              f"characters", field=field)


def outcomes_to_wire(outcomes: Sequence[pb.Outcome], config: GrpcConfig,
                     kinds: Collection[str] = REPORTABLE_OUTCOMES) -> list[list[Any]]:
    """Validate a batch of outcomes; return wire outcomes
    ``[treatment_id, customer_id, outcome, at_ms]``."""
    check_count(len(outcomes), config, "outcomes")
    wire: list[list[Any]] = []
    for i, outcome in enumerate(outcomes):
        where = f"outcomes[{i}]"
        _check_id(outcome.treatment_id, f"{where}.treatment_id")
        _check_id(outcome.customer_id, f"{where}.customer_id")
        if outcome.outcome not in kinds:
            raise RequestRejected(f"unknown outcome {outcome.outcome[:64]!r}; expected one of "
                                  f"{', '.join(sorted(kinds))}", field=f"{where}.outcome")
        if outcome.at_ms <= 0:
            raise RequestRejected("must be a time in ms since the Unix epoch",
                                  field=f"{where}.at_ms")
        wire.append([outcome.treatment_id, outcome.customer_id, outcome.outcome,
                     outcome.at_ms])
    return wire
