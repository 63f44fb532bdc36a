"""The one table from Shush errors to gRPC status codes."""

from __future__ import annotations

import grpc

from ...engine.errors import (
    AuthError,
    BackpressureError,
    CatalogError,
    CodecError,
    ConfigError,
    EngineUnavailable,
    EventRejected,
    ExpressionError,
    RequestRejected,
    ShushError,
    WrongShard,
)

STATUS_OF: dict[type[ShushError], grpc.StatusCode] = {
    EventRejected: grpc.StatusCode.INVALID_ARGUMENT,
    RequestRejected: grpc.StatusCode.INVALID_ARGUMENT,
    CodecError: grpc.StatusCode.INVALID_ARGUMENT,
    CatalogError: grpc.StatusCode.INVALID_ARGUMENT,
    ExpressionError: grpc.StatusCode.INVALID_ARGUMENT,
    ConfigError: grpc.StatusCode.FAILED_PRECONDITION,
    BackpressureError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    EngineUnavailable: grpc.StatusCode.UNAVAILABLE,
    AuthError: grpc.StatusCode.PERMISSION_DENIED,
    WrongShard: grpc.StatusCode.FAILED_PRECONDITION,
}


# a status code by its number, as a reply over frames or a ``DecideOutcome`` carries it
STATUS_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def status_of(error: ShushError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        if cls in STATUS_OF:
            return STATUS_OF[cls]
    return grpc.StatusCode.INTERNAL
