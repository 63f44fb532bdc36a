"""The error tree of Shush. Every error the engine raises on purpose is a ``ShushError``.

    ShushError
    ├── CatalogError            an invalid catalog, at load (file, section, item, field)
    ├── ConfigError             an invalid engine configuration (source, field)
    ├── EventRejected           one event refused (event_id, field, reason) -> dead letter
    ├── RequestRejected         an operator or client request refused (field, reason)
    ├── CodecError              bytes between actors that do not decode (reason)
    ├── ExpressionError         a policy expression that does not parse or check (expression)
    ├── BackpressureError       the engine is full; retry after ``retry_after_s``
    ├── EngineUnavailable       an actor did not answer in time (what)
    ├── AuthError               missing or wrong credential, or role not allowed (role)
    └── StoreError              a state store refused or could not do a call (reason)
        ├── FencedError         a write carried a stale epoch (partition, epoch, current_epoch)
        ├── StoreUnavailable    the database did not answer or stayed locked (backend)
        └── StoreUsageError     a call the store cannot accept as made (reason, field)

Adapters translate these to gRPC/HTTP status codes in one table (``adapters.grpc.status``).
"""

from __future__ import annotations


class ShushError(Exception):
    """Root of every error raised on purpose by Shush."""


class CatalogError(ShushError):
    def __init__(self, reason: str, *, file: str | None = None, item: str | None = None,
                 field: str | None = None) -> None:
        self.reason = reason
        self.file = file
        self.item = item
        self.field = field
        where = ", ".join(
            f"{k} {v!r}" for k, v in (("file", file), ("item", item), ("field", field)) if v
        )
        super().__init__(f"invalid catalog ({where}): {reason}" if where else reason)


class ConfigError(ShushError):
    def __init__(self, reason: str, *, source: str | None = None, field: str | None = None) -> None:
        self.reason = reason
        self.source = source
        self.field = field
        where = ", ".join(f"{k} {v!r}" for k, v in (("source", source), ("field", field)) if v)
        super().__init__(f"invalid configuration ({where}): {reason}" if where else reason)


class EventRejected(ShushError):
    def __init__(self, reason: str, *, event_id: str = "", field: str = "") -> None:
        self.reason = reason
        self.event_id = event_id
        self.field = field
        super().__init__(f"event {event_id!r} rejected: {reason}")


class RequestRejected(ShushError):
    def __init__(self, reason: str, *, field: str = "") -> None:
        self.reason = reason
        self.field = field
        super().__init__(f"{field}: {reason}" if field else reason)


class CodecError(ShushError):
    pass


class ExpressionError(ShushError):
    def __init__(self, reason: str, *, expression: str = "") -> None:
        self.reason = reason
        self.expression = expression
        super().__init__(f"{reason} in expression {expression!r}" if expression else reason)


class BackpressureError(ShushError):
    def __init__(self, reason: str, *, retry_after_s: float) -> None:
        self.reason = reason
        self.retry_after_s = retry_after_s
        super().__init__(f"{reason}; retry after {retry_after_s:.3f}s")


class EngineUnavailable(ShushError):
    def __init__(self, reason: str, *, what: str = "") -> None:
        self.reason = reason
        self.what = what
        super().__init__(f"{what}: {reason}" if what else reason)


class WrongShard(ShushError):
    """A call about a customer reached a shard that does not own it (stale routes)."""

    def __init__(self, customer_id: str, *, owner: int, shard: int) -> None:
        self.customer_id = customer_id
        self.owner = owner
        super().__init__(f"customer {customer_id[:64]!r} is served by shard {owner}, not "
                         f"{shard}: ask Routes again")


class AuthError(ShushError):
    def __init__(self, reason: str, *, role: str = "") -> None:
        self.reason = reason
        self.role = role
        super().__init__(reason)


class StoreError(ShushError):
    """Root of the store errors."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class FencedError(StoreError):
    """A write for ``partition`` carried ``epoch`` while the partition is at ``current_epoch``.

    ``current_epoch`` is 0 when the partition was never acquired.
    """

    def __init__(self, partition: int, epoch: int, current_epoch: int) -> None:
        self.partition = partition
        self.epoch = epoch
        self.current_epoch = current_epoch
        super().__init__(
            f"partition {partition}: write with epoch {epoch} fenced off"
            f" (current epoch {current_epoch})"
        )


class StoreUnavailable(StoreError):
    """The ``backend`` database could not be reached, or its lock was not granted in time."""

    def __init__(self, reason: str, *, backend: str) -> None:
        self.backend = backend
        super().__init__(f"{backend} store unavailable: {reason}")
        self.reason = reason


class StoreUsageError(StoreError):
    """A call the store cannot accept as made, e.g. a row for a partition without an epoch."""

    def __init__(self, reason: str, *, field: str = "") -> None:
        self.field = field
        super().__init__(f"{field}: {reason}" if field else reason)
        self.reason = reason
