"""The wire format between actors: versioned msgpack envelopes of plain lists.

No pickled domain objects cross an actor boundary. An event travels as
``[event_id, customer_id, type, occurred_at_ms, source, attributes]``.
"""

from __future__ import annotations

from typing import Any

import msgpack

from .errors import CodecError

WIRE_VERSION = 1

EVENTS = "events"
ACKS = "acks"
CANDIDATES = "candidates"
VERDICTS = "verdicts"

# Indexes into a wire event.
EVENT_ID, CUSTOMER_ID, TYPE, OCCURRED_AT_MS, SOURCE, ATTRIBUTES = range(6)

# Ack status codes returned per event.
ACCEPTED, DUPLICATE, REJECTED = 0, 1, 2


def pack(kind: str, items: list[Any], **meta: Any) -> bytes:
    envelope = {"v": WIRE_VERSION, "k": kind, "items": items}
    if meta:
        envelope["meta"] = meta
    return msgpack.packb(envelope, use_bin_type=True)


def unpack_envelope(data: bytes, kind: str) -> dict[str, Any]:
    try:
        envelope = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types on bad bytes
        raise CodecError(f"undecodable {kind} batch: {exc}") from exc
    if not isinstance(envelope, dict):
        raise CodecError(f"{kind} batch is not an envelope")
    if envelope.get("v") != WIRE_VERSION:
        raise CodecError(f"{kind} batch has wire version {envelope.get('v')!r}, "
                         f"expected {WIRE_VERSION}")
    if envelope.get("k") != kind:
        raise CodecError(f"expected a {kind} batch, got {envelope.get('k')!r}")
    if not isinstance(envelope.get("items"), list):
        raise CodecError(f"{kind} batch has no item list")
    return envelope


def unpack(data: bytes, kind: str) -> list[Any]:
    items: list[Any] = unpack_envelope(data, kind)["items"]
    return items
