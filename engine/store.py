"""The ``StateStore`` contract: what shards, the outbox and the supervisor persist.

Payloads are bytes (msgpack, encoded by callers); the store never interprets them.

Rules every implementation keeps (the contract suite in
``tests/unit/adapters/test_store_contract.py`` checks them against each one):

- **One transaction per call.** A batch method writes all of its rows or none.
- **Fencing.** Each partition has an owner epoch. ``acquire_partitions`` raises it; every
  partition-scoped write (snapshots, journal, timers) names the epoch it was issued, and a write
  whose epoch is not the partition's current one raises ``FencedError`` and writes nothing. The
  epoch check and the write happen in the same transaction.
- **Last row wins** when a batch upserts the same key twice (snapshots, timers).
- **Exactly one ledger row per idempotency key**, even for duplicates inside one batch or from
  concurrent connections; its outbox entry (its send state) is written in the same transaction.
- **The journal** is one entry per shard batch, covering the partitions it was fenced by.
  Sequence numbers grow across the store and are never reused, even after truncation. Each
  partition has a mark: its snapshots cover the journal up to that sequence number. An entry
  is deleted once every partition's mark has passed it.
- **A customer's partition never changes.** A snapshot upsert keeps the row's partition (an
  upsert that rewrote it cost SQLite an index update per row, a third of the write), so a
  store keeps the partition count it was first used with (``claim_partition_count``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

from .errors import ConfigError, FencedError, StoreUsageError
from .records import record

OutboxStatus = Literal["pending", "dispatched", "failed"]
PARTITION_COUNT_KEY = "partition-count"  # in the models table: the count the store was made with


@record
class SnapshotRow:
    """A customer's state as of ``updated_at_ms``; ``data`` is opaque to the store."""

    customer_id: str
    partition: int
    data: bytes
    updated_at_ms: int


@record
class JournalEntry:
    """One write-ahead entry (a shard's batch of events); ``seq`` is assigned by the store."""

    seq: int
    data: bytes


@record
class TimerKey:
    """Names one durable timer; ``partition`` lets the delete be fenced."""

    customer_id: str
    partition: int
    timer_id: str


@record
class TimerRow:
    """A durable timer, unique by ``(customer_id, timer_id)``."""

    customer_id: str
    partition: int
    timer_id: str
    due_ms: int
    payload: bytes

    @property
    def key(self) -> TimerKey:
        return TimerKey(self.customer_id, self.partition, self.timer_id)


@record
class TreatmentRow:
    """A treatment in the ledger, unique by ``idempotency_key``."""

    idempotency_key: str
    treatment_id: str
    customer_id: str
    action_id: str
    decided_at_ms: int
    payload: bytes


@record
class OutboxItem:
    """A ledger row's dispatch state.

    ``pending`` until dispatched or failed for good; a retriable failure stays ``pending`` with
    ``next_attempt_at_ms`` in the future.
    """

    idempotency_key: str
    treatment_id: str
    customer_id: str
    action_id: str
    payload: bytes
    status: OutboxStatus
    attempts: int
    last_error: str
    enqueued_at_ms: int
    next_attempt_at_ms: int
    dispatched_at_ms: int | None


@record
class DecisionRow:
    """One audited decision of a customer (factors, removals...: ``data`` is opaque)."""

    customer_id: str
    decided_at_ms: int
    data: bytes


@record
class DeadLetterRow:
    """Something the engine refused or could not do, kept rather than lost."""

    kind: str
    reason: str
    field: str
    payload: bytes
    at_ms: int


@runtime_checkable
class StateStore(Protocol):
    """Durable state of the engine. Implementations: memory, SQLite, PostgreSQL."""

    # -- lifecycle --------------------------------------------------------------------------
    def close(self) -> None:
        """Release the connection; the store is unusable afterwards."""
        ...

    def write_times(self) -> dict[str, Any]:
        """How long this connection's write transactions took so far, by stage (waiting for
        the write lock or beginning, the statements, the commit):
        ``{"bounds_ms": [...], "steps": {stage: {"counts": [...], "total_ms": ...}}}``, a count
        per bucket of ``bounds_ms`` and one past the last (a store without transactions has no
        stages). The counts only grow: two readings subtract to the writes between them."""
        ...

    # -- fencing ----------------------------------------------------------------------------
    def acquire_partitions(self, partitions: Sequence[int], owner: str) -> int:
        """Take ownership of ``partitions``; return one new epoch, above each one's current."""
        ...

    def partition_epochs(self, partitions: Sequence[int]) -> dict[int, int]:
        """The current epoch of each partition (0 if never acquired)."""
        ...

    # -- customer snapshots -----------------------------------------------------------------
    def save_snapshots(
        self,
        partition_epochs: Mapping[int, int],
        rows: Sequence[SnapshotRow],
        *,
        journal_covered_to: int | None = None,
    ) -> None:
        """Upsert snapshots by customer id. With ``journal_covered_to``, the snapshots of every
        partition in ``partition_epochs`` now cover the journal up to that sequence number:
        their marks rise to it (a mark never goes down), and the entries that every
        partition's mark has passed are deleted.

        Every row's partition must be in ``partition_epochs``.
        """
        ...

    def load_snapshots(self, partitions: Sequence[int]) -> Iterator[SnapshotRow]:
        """Every snapshot of ``partitions``, partition by partition, lazily paged."""
        ...

    def load_snapshot(self, customer_id: str) -> SnapshotRow | None: ...

    def load_snapshots_of(self, customer_ids: Sequence[str]) -> list[SnapshotRow]:
        """The snapshots of those of ``customer_ids`` that have one, each once, in any order: the
        customers a shard activates for one turn, in one read."""
        ...

    # -- event journal (write-ahead) --------------------------------------------------------
    def append_journal(self, partition_epochs: Mapping[int, int], data: bytes) -> int:
        """Append one entry holding events of the partitions in ``partition_epochs`` (fenced
        by them); return its sequence number, above every earlier one."""
        ...

    def journal_marks(self, partitions: Sequence[int]) -> dict[int, int]:
        """For each partition, the sequence number up to which its snapshots cover the
        journal (0: none)."""
        ...

    def journal_end(self) -> int:
        """The sequence number of the newest entry in the journal (0: none)."""
        ...

    def read_journal(self, after_seq: int = 0, limit: int | None = None) -> list[JournalEntry]:
        """Entries with ``seq > after_seq``, oldest first (every partition's: a reader keeps
        the events of its own partitions above their marks)."""
        ...

    # -- durable timers ---------------------------------------------------------------------
    def put_timers(self, partition_epochs: Mapping[int, int], rows: Sequence[TimerRow]) -> None:
        """Upsert by ``(customer_id, timer_id)``."""
        ...

    def delete_timers(self, partition_epochs: Mapping[int, int], keys: Sequence[TimerKey]) -> int:
        """Delete the named timers; return how many existed."""
        ...

    def load_timers(self, partitions: Sequence[int]) -> list[TimerRow]: ...

    def due_timers(self, partitions: Sequence[int], now_ms: int, limit: int) -> list[TimerRow]:
        """Timers with ``due_ms <= now_ms``, earliest first (then customer id, timer id)."""
        ...

    # -- treatment ledger and outbox --------------------------------------------------------
    def record_treatments(self, rows: Sequence[TreatmentRow], *,
                          decisions: Sequence[DecisionRow] = ()) -> list[bool]:
        """Record and enqueue each treatment, and append ``decisions`` to the audit, in one
        transaction; ``False`` where a treatment's key was already recorded."""
        ...

    def record_treatment(self, row: TreatmentRow) -> bool: ...

    def has_treatment(self, idempotency_key: str) -> bool: ...

    def treatment_count(self) -> int: ...

    def pending_outbox(self, limit: int, *, now_ms: int | None = None) -> list[OutboxItem]:
        """Pending items by next attempt time; with ``now_ms``, only those due by then."""
        ...

    def outbox_item(self, idempotency_key: str) -> OutboxItem | None: ...

    def mark_dispatched(self, idempotency_keys: Sequence[str], at_ms: int) -> int:
        """pending -> dispatched, in one transaction; return how many were pending (a key
        not pending is left as it is)."""
        ...

    def mark_failed(
        self, idempotency_key: str, reason: str, attempts: int, *, retry_at_ms: int | None = None
    ) -> bool:
        """pending -> failed, or stays pending until ``retry_at_ms``; ``False`` if not pending."""
        ...

    # -- decision audit ---------------------------------------------------------------------
    def append_decisions(self, rows: Sequence[DecisionRow]) -> None: ...

    def recent_decisions(self, customer_id: str, limit: int) -> list[DecisionRow]:
        """Newest first (by decision time, then by order of appending)."""
        ...

    def purge_decisions(self, before_ms: int, limit: int) -> int:
        """Delete up to ``limit`` audited decisions made before ``before_ms``, oldest first,
        in one transaction; return how many."""
        ...

    def purge_treatments(self, before_ms: int, limit: int) -> int:
        """Delete up to ``limit`` treatments decided before ``before_ms`` whose send is settled
        (dispatched or failed), their outbox entries with them, oldest first, in one transaction;
        return how many. A pending one stays, whatever its age."""
        ...

    # -- dead letters -----------------------------------------------------------------------
    def dead_letter(self, rows: Sequence[DeadLetterRow]) -> None: ...

    def read_dead_letters(self, limit: int) -> list[DeadLetterRow]:
        """Newest first (order of writing)."""
        ...

    def purge_dead_letters(self, before_ms: int, limit: int) -> int:
        """Delete up to ``limit`` dead letters written before ``before_ms``, oldest first, in
        one transaction; return how many."""
        ...

    def dead_letter_count(self) -> int: ...

    # -- propensity models ------------------------------------------------------------------
    def save_model(self, name: str, data: bytes) -> None: ...

    def load_model(self, name: str) -> bytes | None: ...


# -- rules shared by the implementations ------------------------------------------------------


def check_epochs(requested: Mapping[int, int], current: Mapping[int, int]) -> None:
    """Raise ``FencedError`` for the first partition whose requested epoch is not current.

    A partition never acquired (absent from ``current``) is at epoch 0 and takes no writes.
    """
    for partition in sorted(requested):
        epoch = requested[partition]
        now = current.get(partition, 0)
        if now == 0 or epoch != now:
            raise FencedError(partition, epoch, now)


def require_epochs(partition_epochs: Mapping[int, int], partitions: Iterable[int],
                   field: str) -> None:
    """Every partition written must have an epoch in ``partition_epochs``."""
    for partition in partitions:
        if partition not in partition_epochs:
            raise StoreUsageError(
                f"partition {partition} is written but has no epoch in partition_epochs",
                field=field,
            )


def require_positive(value: int, field: str) -> None:
    if value < 1:
        raise StoreUsageError(f"must be >= 1, got {value}", field=field)


def require_partitions(partitions: Collection[int], field: str = "partitions") -> None:
    if not partitions:
        raise StoreUsageError("at least one partition is needed", field=field)


def last_wins_snapshots(rows: Iterable[SnapshotRow]) -> list[SnapshotRow]:
    """One row per customer, the last of the batch."""
    return list({row.customer_id: row for row in rows}.values())


def last_wins_timers(rows: Iterable[TimerRow]) -> list[TimerRow]:
    """One row per ``(customer_id, timer_id)``, the last of the batch."""
    return list({(row.customer_id, row.timer_id): row for row in rows}.values())


def claim_partition_count(store: StateStore, num_partitions: int) -> None:
    """Record the store's partition count on first use; refuse a config that differs later:
    its customers would hash to other partitions than their snapshots, journal marks and
    timers were written under."""
    saved = store.load_model(PARTITION_COUNT_KEY)
    if saved is None:
        store.save_model(PARTITION_COUNT_KEY, str(num_partitions).encode())
    elif int(saved) != num_partitions:
        raise ConfigError(
            f"the store holds customers in {int(saved)} partitions and the config asks for "
            f"{num_partitions}; a store keeps its partition count (set num_partitions: "
            f"{int(saved)}, or start on a new store)", field="num_partitions")
