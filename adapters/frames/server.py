"""The frames server: the gRPC service's unary methods over ``wire`` frames, on the event loop
of the router it lives in, answered by the same ``ShushServicer``.

Why it exists: a grpc.aio call crosses three threads each way (grpc's I/O thread, its
completion-queue poller, the event loop), and on a loaded 2-core machine each crossing waits
for a CPU. A bare grpc.aio echo took 2.2 ms at p50 and 8.2 at p99 beside a loadtest at
10,000 events/s, a frames-style echo on the same loop 0.5 and 4.4 (stop 27 in
docs/performance-history.md).
Here a request is read, served and answered by the loop's own callbacks.

It keeps the gRPC edge's guarantees: the same API keys and roles (checked per call before
the request is parsed), TLS and mutual TLS from the same settings, the same request limits
and status codes, malformed bytes refused with ``INVALID_ARGUMENT`` naming what was wrong, and
a frame over ``max_message_bytes`` refused without closing the connection. Streaming methods
(``StreamEvents``) are gRPC's only.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any, cast

import grpc
from google.protobuf.message import DecodeError, Message

from ...engine.config import GrpcConfig
from ...engine.errors import ConfigError
from ..grpc import shush_pb2 as pb
from ..grpc.auth import Denied, KeyRing
from . import wire

log = logging.getLogger(__name__)

# Calls one connection may have in flight; past it the server stops reading that connection
# until some finish (HTTP/2's concurrent-stream limit, in gRPC)
MAX_CALLS_PER_CONNECTION = 128


class _Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class _Context:
    """What ``ShushServicer`` uses of a ``grpc.aio.ServicerContext``."""

    def __init__(self, metadata: wire.Metadata) -> None:
        self.metadata = metadata
        self.trailing: wire.Metadata = ()

    def invocation_metadata(self) -> wire.Metadata:
        return self.metadata

    def set_trailing_metadata(self, metadata: wire.Metadata) -> None:
        self.trailing = tuple(metadata)

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        raise _Aborted(code, details)


@dataclass(frozen=True, slots=True)
class _Method:
    behaviour: Callable[[Any, _Context], Awaitable[Message]]
    request: type[Message]


def bound_methods(servicer: Any, only: Collection[str] | None = None) -> dict[str, _Method]:
    """The service's unary-unary methods (``only`` these, if given), by name, bound to
    ``servicer``."""
    return {m.name: _Method(getattr(servicer, m.name), getattr(pb, m.input_type.name))
            for m in wire.unary_methods() if only is None or m.name in only}


def _code(code: grpc.StatusCode) -> int:
    number: int = code.value[0]
    return number


class FramesServer:
    def __init__(self, servicer: Any, config: GrpcConfig,
                 only: Collection[str] | None = None) -> None:
        self.methods = bound_methods(servicer, only)
        self.keys = KeyRing(config.security.api_keys)
        self.max_body_bytes = config.max_message_bytes + wire.ENVELOPE_BYTES
        self.server: asyncio.Server | None = None
        self.connections: set[_Connection] = set()
        self.answered = 0  # calls answered, whatever their status

    async def start(self, host: str, port: int, tls: ssl.SSLContext | None) -> int:
        """Listen on ``host:port`` (0: a free port), shared with the other routers
        (SO_REUSEPORT: the kernel spreads connections over them); return the port."""
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _Connection(self), host, port,
                                               ssl=tls, reuse_port=True)
        bound: int = self.server.sockets[0].getsockname()[1]
        return bound

    async def stop(self, grace_s: float) -> None:
        """Stop accepting; calls in flight get ``grace_s`` to finish, then connections
        close."""
        if self.server is None:
            return
        self.server.close()
        calls = [t for c in self.connections for t in c.calls]
        if calls:
            await asyncio.wait(calls, timeout=grace_s)
        for connection in list(self.connections):
            connection.close()
        self.server = None

    async def answer(self, body: bytes | wire.Oversized
                     ) -> tuple[int, str, wire.Metadata, bytes]:
        """One call's ``(code, details, trailing metadata, reply bytes)``."""
        if isinstance(body, wire.Oversized):
            return (_code(grpc.StatusCode.RESOURCE_EXHAUSTED),
                    f"a frame of {body.length} bytes, over the limit of "
                    f"{self.max_body_bytes}", (), b"")
        try:
            name, metadata, data = wire.parse_request(body)
        except ValueError as exc:
            return _code(grpc.StatusCode.INVALID_ARGUMENT), f"malformed frame: {exc}", (), b""
        method = self.methods.get(name)
        if method is None:
            return (_code(grpc.StatusCode.UNIMPLEMENTED),
                    f"no unary method {name[:64]!r} on the frames edge", (), b"")
        if self.keys.enabled:
            try:
                self.keys.check(metadata, name)
            except Denied as denied:
                log.warning("frames %s refused: %s", name, denied.message)
                return _code(denied.code), denied.message, (), b""
        try:
            request = method.request.FromString(data)
        except (DecodeError, ValueError, TypeError) as exc:
            return (_code(grpc.StatusCode.INVALID_ARGUMENT),
                    f"{name}: malformed request message ({exc})", (), b"")
        context = _Context(metadata)
        try:
            reply = await method.behaviour(request, context)
        except _Aborted as aborted:
            return _code(aborted.code), aborted.details, context.trailing, b""
        except Exception as exc:  # a call boundary: one failed call never ends the others
            log.exception("frames %s failed", name)
            return _code(grpc.StatusCode.UNKNOWN), f"{name}: {exc!r}", (), b""
        return 0, "", context.trailing, reply.SerializeToString()


class _Connection(asyncio.Protocol):
    def __init__(self, server: FramesServer) -> None:
        self.server = server
        self.reader = wire.FrameReader(server.max_body_bytes)
        self.transport: asyncio.Transport | None = None
        self.calls: set[asyncio.Task[None]] = set()
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.transport = None  # calls in flight finish; their replies have nowhere to go

    def data_received(self, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        for call_id, body in self.reader.feed(data):
            task = loop.create_task(self._call(call_id, body))
            self.calls.add(task)
            task.add_done_callback(self._done)
        if len(self.calls) >= MAX_CALLS_PER_CONNECTION and self.transport is not None:
            self.transport.pause_reading()
            self.paused = True

    def _done(self, task: asyncio.Task[None]) -> None:
        self.calls.discard(task)
        if self.paused and len(self.calls) < MAX_CALLS_PER_CONNECTION // 2 and self.transport:
            self.transport.resume_reading()
            self.paused = False

    async def _call(self, call_id: int, body: bytes | wire.Oversized) -> None:
        code, details, trailing, reply = await self.server.answer(body)
        self.server.answered += 1
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(wire.reply_frame(call_id, code, details, trailing, reply))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def server_tls(config: GrpcConfig) -> ssl.SSLContext | None:
    """The gRPC edge's TLS settings as an ``ssl`` context (mutual TLS with a client CA)."""
    security = config.security
    if security.tls_cert_path is None or security.tls_key_path is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(security.tls_cert_path, security.tls_key_path)
        if security.tls_client_ca_path is not None:
            context.load_verify_locations(security.tls_client_ca_path)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load a TLS file: {exc}", field="grpc.security") from exc
    return context
