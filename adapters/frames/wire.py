"""The frames edge's wire form: the gRPC service's unary calls, without HTTP/2.

Each frame is a header, ``!II`` (the body's length in bytes, the call id), then the body, a
msgpack array:

- a request: ``[method, metadata, request]``: the gRPC method's name (``Decide``), the call's
  metadata as ``[[key, value], ...]`` (``authorization: Bearer <key>``) and the protobuf
  request message's bytes;
- a reply: ``[code, details, trailing, reply]``: the gRPC status code's number (0: OK), its
  details, the trailing metadata (``retry-after-s``, ``shush-field``) and the protobuf reply's
  bytes (empty unless OK).

Calls on one connection run concurrently; a reply carries its call's id. A frame over the
reader's limit is answered ``RESOURCE_EXHAUSTED`` and its bytes are skipped, so the
connection stays usable.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import msgpack
from google.protobuf.descriptor import MethodDescriptor

from ...engine.packing import packb
from ..grpc import shush_pb2 as pb

HEADER = struct.Struct("!II")
MAX_CALL_ID = 2**32 - 1
# What a request's envelope adds to its message (method, metadata): the limit a reader
# applies is the message limit plus this
ENVELOPE_BYTES = 64 * 1024

Metadata = tuple[tuple[str, str], ...]


def unary_methods() -> list[MethodDescriptor]:
    """The service's unary-unary methods: what the frames edge carries."""
    return [m for m in pb.DESCRIPTOR.services_by_name["Shush"].methods
            if not m.client_streaming and not m.server_streaming]


@dataclass(frozen=True, slots=True)
class Oversized:
    """A frame the reader skipped: ``length`` bytes, over its limit."""

    length: int


def frame(call_id: int, body: bytes) -> bytes:
    return HEADER.pack(len(body), call_id) + body


def request_frame(call_id: int, method: str, metadata: Metadata, request: bytes) -> bytes:
    return frame(call_id, packb([method, [list(m) for m in metadata], request]))


def reply_frame(call_id: int, code: int, details: str, trailing: Metadata,
                reply: bytes) -> bytes:
    return frame(call_id, packb([code, details, [list(m) for m in trailing], reply]))


def _pairs(value: Any, what: str) -> Metadata:
    if not isinstance(value, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(s, str) for s in p)
            for p in value):
        raise ValueError(f"{what} must be a list of [key, value] strings")
    return tuple((k, v) for k, v in value)


def parse_request(body: bytes) -> tuple[str, Metadata, bytes]:
    """``(method, metadata, request bytes)``; ``ValueError`` naming what is wrong."""
    try:
        value = msgpack.unpackb(body)
    except Exception as exc:  # msgpack raises several kinds for bad bytes
        raise ValueError(f"not msgpack ({exc})") from exc
    if not isinstance(value, list) or len(value) != 3:
        raise ValueError("a request is [method, metadata, request]")
    method, metadata, request = value
    if not isinstance(method, str) or not isinstance(request, bytes):
        raise ValueError("a request is [method: str, metadata, request: bytes]")
    return method, _pairs(metadata, "metadata"), request


def parse_reply(body: bytes) -> tuple[int, str, Metadata, bytes]:
    """``(code, details, trailing metadata, reply bytes)``; ``ValueError`` if malformed."""
    try:
        value = msgpack.unpackb(body)
    except Exception as exc:
        raise ValueError(f"not msgpack ({exc})") from exc
    if not isinstance(value, list) or len(value) != 4:
        raise ValueError("a reply is [code, details, trailing, reply]")
    code, details, trailing, reply = value
    if not isinstance(code, int) or not isinstance(details, str) or not isinstance(reply,
                                                                                   bytes):
        raise ValueError("a reply is [code: int, details: str, trailing, reply: bytes]")
    return code, details, _pairs(trailing, "trailing metadata"), reply


class FrameReader:
    """Cuts a byte stream into ``(call id, body)`` frames; a frame longer than
    ``max_body_bytes`` comes out as ``(call id, Oversized)`` and its bytes are skipped."""

    def __init__(self, max_body_bytes: int) -> None:
        self.max_body_bytes = max_body_bytes
        self._buffer = bytearray()
        self._skip = 0  # bytes of an oversized frame still to drop

    def feed(self, data: bytes) -> list[tuple[int, bytes | Oversized]]:
        if self._skip:
            dropped = min(self._skip, len(data))
            self._skip -= dropped
            data = data[dropped:]
        buffer = self._buffer
        buffer += data
        frames: list[tuple[int, bytes | Oversized]] = []
        start = 0
        end = len(buffer)
        while end - start >= HEADER.size:
            length, call_id = HEADER.unpack_from(buffer, start)
            if length > self.max_body_bytes:
                frames.append((call_id, Oversized(length)))
                start += HEADER.size
                dropped = min(length, end - start)
                start += dropped
                self._skip = length - dropped
                continue
            if end - start - HEADER.size < length:
                break
            body_start = start + HEADER.size
            frames.append((call_id, bytes(buffer[body_start:body_start + length])))
            start = body_start + length
        del buffer[:start]
        return frames
