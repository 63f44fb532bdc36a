"""API keys and roles on the gRPC endpoint, as one grpc.aio server interceptor.

A call carries ``authorization: Bearer <key>`` metadata. The key's SHA-256 is looked up among
the configured keys (only hashes are configured); the key's role must allow the method:

- ``submitter``: SubmitEvents, SubmitPacked, StreamEvents, Decide, DecideStream,
  RecordOutcome, Health, Routes;
- ``operator``: every method (levers, explain, and the catalog / emergency-run calls to come).

A method not listed for submitters is operator-only, so a new RPC is closed by default.
A missing or unknown key gets ``UNAUTHENTICATED``, a key whose role does not allow the method
``PERMISSION_DENIED``; either way the request body is never parsed and nothing changes.

The interceptor also parses request bytes itself, so a malformed protobuf gets
``INVALID_ARGUMENT`` naming the method instead of grpc's generic ``INTERNAL``.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from ...engine.config import ApiKeyConfig, Role

log = logging.getLogger(__name__)

SERVICE = "shush.v1.Shush"
SUBMITTER_METHODS = frozenset({"SubmitEvents", "SubmitPacked", "StreamEvents", "Decide",
                               "DecideStream", "RecordOutcome", "Health", "Routes"})
ROLE_METHODS: dict[Role, frozenset[str] | None] = {
    "submitter": SUBMITTER_METHODS,
    "operator": None,  # every method
}
BEARER = "bearer "


def hash_key(key: str) -> str:
    """What the configuration holds for ``key``: the hex SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(key.encode()).hexdigest()


def allowed(role: Role, method: str) -> bool:
    methods = ROLE_METHODS[role]
    return methods is None or method in methods


class Denied(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(message)


class KeyRing:
    """The configured keys; ``check`` answers who is calling, or raises ``Denied``."""

    def __init__(self, keys: Sequence[ApiKeyConfig]) -> None:
        self.keys = tuple(keys)

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def identify(self, key: str) -> ApiKeyConfig | None:
        digest = hash_key(key)
        found = None
        for entry in self.keys:  # compare every entry in constant time
            if hmac.compare_digest(entry.sha256, digest):
                found = entry
        return found

    def check(self, metadata: Sequence[tuple[str, Any]] | None, method: str) -> ApiKeyConfig:
        values = [v for k, v in (metadata or ()) if k.lower() == "authorization"]
        if not values:
            raise Denied(grpc.StatusCode.UNAUTHENTICATED,
                         f"{method}: missing credential; send metadata "
                         f"'authorization: Bearer <api key>'")
        value = values[0].decode() if isinstance(values[0], bytes) else str(values[0])
        if len(values) > 1 or not value.lower().startswith(BEARER):
            raise Denied(grpc.StatusCode.UNAUTHENTICATED,
                         f"{method}: malformed credential; expected one "
                         f"'authorization: Bearer <api key>'")
        entry = self.identify(value[len(BEARER):].strip())
        if entry is None:
            raise Denied(grpc.StatusCode.UNAUTHENTICATED, f"{method}: unknown API key")
        if not allowed(entry.role, method):
            raise Denied(grpc.StatusCode.PERMISSION_DENIED,
                         f"{method} needs the operator role; API key {entry.name!r} has role "
                         f"{entry.role!r}")
        return entry


def _method_name(full_method: str) -> str:
    return full_method.rsplit("/", 1)[-1]


def _denying_handler(handler: grpc.RpcMethodHandler, denied: Denied) -> grpc.RpcMethodHandler:
    """A handler of the same shape that refuses without reading the request."""
    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(denied.code, denied.message)

    kind = ("unary_unary" if handler.unary_unary else "stream_unary" if handler.stream_unary
            else "unary_stream" if handler.unary_stream else "stream_stream")
    factory = getattr(grpc, f"{kind}_rpc_method_handler")
    method_handler: grpc.RpcMethodHandler = factory(
        refuse, request_deserializer=None, response_serializer=handler.response_serializer)
    return method_handler


Parse = Callable[[bytes], Any]


async def _parse(parse: Parse, data: bytes, method: str,
                 context: grpc.aio.ServicerContext) -> Any:
    try:
        return parse(data)
    except (DecodeError, ValueError, TypeError) as exc:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                            f"{method}: malformed request message ({exc})")


def _parsing_handler(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    """The same handler, parsing request bytes itself so bad bytes get INVALID_ARGUMENT."""
    parse: Parse | None = handler.request_deserializer
    if parse is None:
        return handler
    if handler.unary_unary is not None:
        behaviour = handler.unary_unary

        async def unary(data: bytes, context: grpc.aio.ServicerContext) -> Any:
            assert parse is not None
            return await behaviour(await _parse(parse, data, method, context), context)

        return grpc.unary_unary_rpc_method_handler(
            unary, request_deserializer=None, response_serializer=handler.response_serializer)

    def messages(datas: AsyncIterator[bytes], context: grpc.aio.ServicerContext
                 ) -> AsyncIterator[Any]:
        async def parsed() -> AsyncIterator[Any]:
            assert parse is not None
            async for data in datas:
                yield await _parse(parse, data, method, context)

        return parsed()

    if handler.stream_unary is not None:
        streaming = handler.stream_unary

        async def stream(datas: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> Any:
            return await streaming(messages(datas, context), context)

        return grpc.stream_unary_rpc_method_handler(
            stream, request_deserializer=None, response_serializer=handler.response_serializer)
    if handler.stream_stream is not None:
        both_ways = handler.stream_stream

        # grpc.aio tells a handler that yields its replies from one that writes them
        # (``context.write``) by its function's kind: the wrapper is of the handler's kind
        async def yielding(datas: AsyncIterator[bytes], context: grpc.aio.ServicerContext
                           ) -> AsyncIterator[Any]:
            async for reply in both_ways(messages(datas, context), context):
                yield reply

        async def writing(datas: AsyncIterator[bytes], context: grpc.aio.ServicerContext
                          ) -> None:
            await both_ways(messages(datas, context), context)

        stream_both = yielding if inspect.isasyncgenfunction(both_ways) else writing

        return grpc.stream_stream_rpc_method_handler(
            stream_both, request_deserializer=None,
            response_serializer=handler.response_serializer)
    return handler


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Checks the caller's API key and role before the method runs (when keys are set)."""

    def __init__(self, keys: KeyRing) -> None:
        self.keys = keys

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails],
                                     Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler  # unknown method: grpc answers UNIMPLEMENTED
        method = _method_name(handler_call_details.method)
        if self.keys.enabled:
            try:
                self.keys.check(handler_call_details.invocation_metadata, method)
            except Denied as denied:
                log.warning("gRPC %s refused: %s", method, denied.message)
                return _denying_handler(handler, denied)
        return _parsing_handler(handler, method)
