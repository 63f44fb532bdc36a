"""The client side of the frames edge: ``FramesChannel``, one connection that multiplexes
calls, and ``FramesStub``, which offers the unary methods of the gRPC stub (same request and
reply messages, the same errors: ``grpc.aio.AioRpcError`` with the status code, details and
trailing metadata), so the client drives either transport the same way."""

from __future__ import annotations

import asyncio
import itertools
import ssl
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import grpc
from google.protobuf.message import Message

from ..grpc import shush_pb2 as pb
from ..grpc.status import STATUS_BY_NUMBER
from . import wire

# a client reads replies of any size the server may send (the gRPC client's limit)
MAX_REPLY_BYTES = 64 * 1024 * 1024


def _error(code: grpc.StatusCode, details: str,
           trailing: wire.Metadata = ()) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailing),
                                details=details)


class _ClientConnection(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = wire.FrameReader(MAX_REPLY_BYTES)
        self.pending: dict[int, asyncio.Future[tuple[int, str, wire.Metadata, bytes]]] = {}
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        for call_id, body in self.reader.feed(data):
            future = self.pending.pop(call_id, None)
            if future is None or future.done():
                continue  # its caller gave up (timeout)
            if isinstance(body, wire.Oversized):
                future.set_exception(_error(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                            f"a reply of {body.length} bytes, over the "
                                            f"client's limit of {MAX_REPLY_BYTES}"))
                continue
            try:
                future.set_result(wire.parse_reply(body))
            except ValueError as exc:
                future.set_exception(_error(grpc.StatusCode.INTERNAL,
                                            f"malformed reply frame: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        reason = exc or "the server closed the connection"
        for future in self.pending.values():
            if not future.done():
                future.set_exception(_error(grpc.StatusCode.UNAVAILABLE,
                                            f"connection lost: {reason}"))
        self.pending.clear()


class FramesChannel:
    """One connection to a frames edge, opened on first use and again after it is lost
    (the calls in flight then fail ``UNAVAILABLE``, which the client retries)."""

    def __init__(self, target: str, tls: ssl.SSLContext | None = None,
                 server_name: str | None = None) -> None:
        host, _, port = target.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"frames target must be host:port, got {target!r}")
        self.host, self.port = host.strip("[]"), int(port)
        self.tls = tls
        self.server_name = server_name
        self._connection: _ClientConnection | None = None
        self._connecting: asyncio.Lock | None = None
        self._ids = itertools.count(1)

    async def _connected(self) -> _ClientConnection:
        connection = self._connection
        if connection is not None and connection.transport is not None:
            return connection
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            connection = self._connection
            if connection is None or connection.transport is None:
                try:
                    _, connection = await asyncio.get_running_loop().create_connection(
                        _ClientConnection, self.host, self.port, ssl=self.tls,
                        server_hostname=(self.server_name or self.host) if self.tls else None)
                except (OSError, ssl.SSLError) as exc:
                    raise _error(grpc.StatusCode.UNAVAILABLE,
                                 f"cannot connect to {self.host}:{self.port}: {exc}") from exc
                self._connection = connection
            return connection

    async def call(self, method: str, request: bytes, metadata: wire.Metadata,
                   timeout_s: float | None) -> bytes:
        """The reply's bytes; ``grpc.aio.AioRpcError`` for any status but OK."""
        connection = await self._connected()
        call_id = next(self._ids) % wire.MAX_CALL_ID or 1
        future: asyncio.Future[tuple[int, str, wire.Metadata, bytes]] = (
            asyncio.get_running_loop().create_future())
        connection.pending[call_id] = future
        assert connection.transport is not None
        connection.transport.write(wire.request_frame(call_id, method, metadata, request))
        try:
            code, details, trailing, reply = await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            connection.pending.pop(call_id, None)
            raise _error(grpc.StatusCode.DEADLINE_EXCEEDED,
                         f"{method}: no reply in {timeout_s} s") from None
        if code != 0:
            raise _error(STATUS_BY_NUMBER.get(code, grpc.StatusCode.UNKNOWN), details, trailing)
        return reply

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and connection.transport is not None:
            connection.transport.close()


class FramesStub:
    """The gRPC stub's unary methods over a ``FramesChannel``:
    ``await stub.Decide(request, timeout=..., metadata=...)``."""

    def __init__(self, channel: FramesChannel) -> None:
        self._replies = {m.name: getattr(pb, m.output_type.name) for m in wire.unary_methods()}
        self.channel = channel

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Message]]:
        reply_type = self.__dict__["_replies"].get(name)
        if reply_type is None:
            raise AttributeError(f"{name} is not a unary method of the frames edge")

        async def call(request: Message, timeout: float | None = None,
                       metadata: Any = ()) -> Message:
            data = await self.channel.call(name, request.SerializeToString(),
                                            tuple(metadata or ()), timeout)
            reply: Message = reply_type.FromString(data)
            return reply

        return call


def client_tls(root_certificates: bytes | None, client_certificate: bytes | None,
               client_key: bytes | None) -> ssl.SSLContext:
    """A TLS context trusting ``root_certificates`` (PEM; the system's CAs if None), with a
    client certificate and key (PEM) for mutual TLS."""
    context = ssl.create_default_context(
        cadata=root_certificates.decode() if root_certificates is not None else None)
    if client_certificate is not None and client_key is not None:
        # ssl loads a certificate chain from files only
        with tempfile.TemporaryDirectory() as directory:
            cert, key = Path(directory, "cert.pem"), Path(directory, "key.pem")
            cert.write_bytes(client_certificate)
            key.touch(mode=0o600)
            key.write_bytes(client_key)
            context.load_cert_chain(cert, key)
    return context
