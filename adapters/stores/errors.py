"""Errors raised by the state stores.

    ShushError                      (shush.engine.errors)
    └── StoreError                  a store refused or could not do a call (reason)
        ├── FencedError             a write carried a stale epoch (partition, epoch, current_epoch)
        ├── StoreUnavailable        the database did not answer or stayed locked (backend)
        └── StoreUsageError         a call the store cannot accept as made (reason, field)

A ``FencedError`` means another incarnation owns the partition now: the caller must stop
writing for it (and usually stop altogether). Nothing of the refused call was written.
A ``StoreUnavailable`` call was rolled back too; it may succeed if retried.
"""

from __future__ import annotations

from ...engine.errors import ShushError


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
