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


def refusal_metadata(field: str = "", retry_after_s: float | None = None
                     ) -> tuple[tuple[str, str], ...]:
    """The trailing metadata of a refused call, besides its status: the request field at
    fault (``shush-field``) and when to try again (``retry-after-s``). A unary call carries
    it; a ``DecideStream`` answer carries the two values, and the client rebuilds this."""
    metadata: tuple[tuple[str, str], ...] = ()
    if field:
        metadata += (("shush-field", field),)
    if retry_after_s is not None:
        metadata += (("retry-after-s", f"{retry_after_s:.3f}"),)
    return metadata


def refusal_of(error: ShushError) -> tuple[str, float | None]:
    """What ``refusal_metadata`` says of ``error``: (the field at fault of a rejected event,
    the wait a busy engine asks for)."""
    return (error.field if isinstance(error, EventRejected) else "",
            error.retry_after_s if isinstance(error, BackpressureError) else None)


# a status code by its number, as a reply over frames or a ``DecideOutcome`` carries it
STATUS_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def status_of(error: ShushError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        if cls in STATUS_OF:
            return STATUS_OF[cls]
    return grpc.StatusCode.INTERNAL
