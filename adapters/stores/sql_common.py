"""What the SQLite and PostgreSQL stores do the same way: reads and single-row writes whose SQL
differs only in the placeholder (``?`` here; PostgreSQL's ``_sql`` turns it into ``%s``)."""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, cast

from ...actors.step_times import StepTimes
from ...engine.store import (
    DeadLetterRow,
    DecisionRow,
    OutboxItem,
    OutboxStatus,
    SnapshotRow,
    TreatmentRow,
    require_positive,
)

# The outbox is the treatments rows' send state, not a table of its own: a table of its own
# cost each treatment a second random-keyed B-tree (its idempotency key), a row and two index
# entries, about a quarter of the WAL pages the ledger wrote (``benchmarks/bench_store.py``).
# The pending rows have a partial index of their own, small since they leave it once sent.
OUTBOX_COLUMNS = (  # (name, declaration), as added to a ledger that had a separate outbox
    ("status", "TEXT NOT NULL DEFAULT 'pending'"),
    ("attempts", "INTEGER NOT NULL DEFAULT 0"),
    ("last_error", "TEXT NOT NULL DEFAULT ''"),
    ("next_attempt_at_ms", "BIGINT NOT NULL DEFAULT 0"),
    ("dispatched_at_ms", "BIGINT"),
)
MOVE_OUTBOX = """
UPDATE treatments SET status = o.status, attempts = o.attempts, last_error = o.last_error,
       next_attempt_at_ms = o.next_attempt_at_ms, dispatched_at_ms = o.dispatched_at_ms
FROM outbox o WHERE o.idempotency_key = treatments.idempotency_key
"""
# Customer ids per read of ``load_snapshots_of``: one statement instead of one per customer
# (7.4 µs per row against 18.5 for a random row of a 400,000-row SQLite file), well under the
# drivers' limits on bound parameters.
IDS_PER_READ = 500
PENDING_INDEX = ("CREATE INDEX IF NOT EXISTS treatments_pending"
                 " ON treatments (next_attempt_at_ms, idempotency_key) WHERE status = 'pending'")
OUTBOX_SELECT = """
SELECT idempotency_key, treatment_id, customer_id, action_id, payload, status, attempts,
       last_error, decided_at_ms, next_attempt_at_ms, dispatched_at_ms
FROM treatments
"""


def outbox_item(row: Sequence[Any]) -> OutboxItem:
    return OutboxItem(
        idempotency_key=row[0], treatment_id=row[1], customer_id=row[2], action_id=row[3],
        payload=bytes(row[4]), status=cast(OutboxStatus, row[5]), attempts=row[6],
        last_error=row[7], enqueued_at_ms=row[8], next_attempt_at_ms=row[9],
        dispatched_at_ms=row[10],
    )


class SqlStoreCommon(ABC):
    """The shared half of a SQL ``StateStore``; subclasses give the connection handling."""

    page_size: int  # rows per read when loading snapshots
    _lock: threading.Lock  # held through each transaction
    _write_times: StepTimes  # under _lock

    def write_times(self) -> dict[str, Any]:
        with self._lock:
            return self._write_times.to_wire()

    def _timed(self, opening: str, asked: float, began: float, written: float) -> None:
        """Count a committed transaction's stages (``_lock`` held): ``opening`` (taking the
        write lock, or beginning) from ``asked`` to ``began``, its statements until
        ``written``, its commit until now."""
        times = self._write_times
        times.record(opening, (began - asked) * 1000)
        times.record("statements", (written - began) * 1000)
        times.record("commit", (time.perf_counter() - written) * 1000)

    def _sql(self, sql: str) -> str:
        """The statement in the driver's placeholder style (``?`` for sqlite3)."""
        return sql

    @abstractmethod
    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]: ...

    @abstractmethod
    def _write(self) -> AbstractContextManager[Any]: ...

    @abstractmethod
    def _check(self, cur: Any, partition_epochs: Mapping[int, int]) -> None: ...

    @abstractmethod
    def record_treatments(self, rows: Sequence[TreatmentRow], *,
                          decisions: Sequence[DecisionRow] = ()) -> list[bool]: ...

    def _execute(self, cur: Any, sql: str, params: Sequence[Any]) -> int:
        cur.execute(self._sql(sql), params)
        return int(cur.rowcount)

    def load_snapshot(self, customer_id: str) -> SnapshotRow | None:
        rows = self._read(self._sql("SELECT customer_id, partition, data, updated_at_ms"
                                    " FROM snapshots WHERE customer_id = ?"), (customer_id,))
        return SnapshotRow(*rows[0]) if rows else None

    def load_snapshots_of(self, customer_ids: Sequence[str]) -> list[SnapshotRow]:
        rows: list[SnapshotRow] = []
        customer_ids = list(dict.fromkeys(customer_ids))  # each once
        for start in range(0, len(customer_ids), IDS_PER_READ):
            chunk = customer_ids[start:start + IDS_PER_READ]
            rows.extend(SnapshotRow(*row) for row in self._read(self._sql(
                "SELECT customer_id, partition, data, updated_at_ms FROM snapshots"
                f" WHERE customer_id IN ({', '.join('?' * len(chunk))})"), chunk))
        return rows

    def load_snapshots(self, partitions: Sequence[int]) -> Iterator[SnapshotRow]:
        """Partition by partition, in pages of ``page_size`` (keyset paging on customer id)."""
        query = self._sql("SELECT customer_id, partition, data, updated_at_ms FROM snapshots"
                          " WHERE partition = ? AND customer_id > ? ORDER BY customer_id"
                          " LIMIT ?")
        for partition in partitions:
            after = ""
            while True:
                page = self._read(query, (partition, after, self.page_size))
                for row in page:
                    yield SnapshotRow(*row)
                if len(page) < self.page_size:
                    break
                after = page[-1][0]

    def journal_end(self) -> int:
        return int(self._read("SELECT coalesce(max(seq), 0) FROM journal_entries")[0][0])

    def record_treatment(self, row: TreatmentRow) -> bool:
        return self.record_treatments([row])[0]

    def has_treatment(self, idempotency_key: str) -> bool:
        return bool(self._read(self._sql("SELECT 1 FROM treatments WHERE idempotency_key = ?"),
                               (idempotency_key,)))

    def treatment_count(self) -> int:
        return int(self._read("SELECT count(*) FROM treatments")[0][0])

    def pending_outbox(self, limit: int, *, now_ms: int | None = None) -> list[OutboxItem]:
        require_positive(limit, "limit")
        due = "" if now_ms is None else " AND next_attempt_at_ms <= ?"
        params = (limit,) if now_ms is None else (now_ms, limit)
        rows = self._read(self._sql(OUTBOX_SELECT + f" WHERE status = 'pending'{due}"
                                    " ORDER BY next_attempt_at_ms, idempotency_key LIMIT ?"),
                          params)
        return [outbox_item(row) for row in rows]

    def outbox_item(self, idempotency_key: str) -> OutboxItem | None:
        rows = self._read(self._sql(OUTBOX_SELECT + " WHERE idempotency_key = ?"),
                          (idempotency_key,))
        return outbox_item(rows[0]) if rows else None

    def mark_dispatched(self, idempotency_keys: Sequence[str], at_ms: int) -> int:
        if not idempotency_keys:
            return 0
        with self._write() as cur:
            return sum(self._execute(
                cur, "UPDATE treatments SET status = 'dispatched', dispatched_at_ms = ?"
                " WHERE idempotency_key = ? AND status = 'pending'",
                (at_ms, key)) for key in idempotency_keys)

    def mark_failed(
        self, idempotency_key: str, reason: str, attempts: int, *, retry_at_ms: int | None = None
    ) -> bool:
        with self._write() as cur:
            if retry_at_ms is None:
                return self._execute(
                    cur, "UPDATE treatments SET status = 'failed', attempts = ?, last_error = ?"
                    " WHERE idempotency_key = ? AND status = 'pending'",
                    (attempts, reason, idempotency_key)) == 1
            return self._execute(
                cur, "UPDATE treatments SET attempts = ?, last_error = ?, next_attempt_at_ms = ?"
                " WHERE idempotency_key = ? AND status = 'pending'",
                (attempts, reason, retry_at_ms, idempotency_key)) == 1

    def recent_decisions(self, customer_id: str, limit: int) -> list[DecisionRow]:
        require_positive(limit, "limit")
        rows = self._read(self._sql(
            "SELECT customer_id, decided_at_ms, data FROM decisions"
            " WHERE customer_id = ? ORDER BY decided_at_ms DESC, id DESC LIMIT ?"),
            (customer_id, limit))
        return [DecisionRow(*row) for row in rows]

    def purge_decisions(self, before_ms: int, limit: int) -> int:
        return self._purge_oldest("decisions", "decided_at_ms", before_ms, limit)

    def _purge_oldest(self, table: str, time_column: str, before_ms: int, limit: int) -> int:
        """Delete up to ``limit`` rows of ``table`` (keyed by ``id``) older than ``before_ms``,
        oldest first, in one transaction."""
        require_positive(limit, "limit")
        with self._write() as cur:
            return self._execute(
                cur, f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table}"
                f" WHERE {time_column} < ? ORDER BY {time_column} LIMIT ?)", (before_ms, limit))

    def purge_treatments(self, before_ms: int, limit: int) -> int:
        require_positive(limit, "limit")
        with self._write() as cur:
            return self._execute(
                cur, "DELETE FROM treatments WHERE idempotency_key IN (SELECT idempotency_key"
                " FROM treatments WHERE decided_at_ms < ? AND status <> 'pending'"
                " ORDER BY decided_at_ms LIMIT ?)", (before_ms, limit))

    def read_dead_letters(self, limit: int) -> list[DeadLetterRow]:
        require_positive(limit, "limit")
        rows = self._read(self._sql("SELECT kind, reason, field, payload, at_ms FROM dead_letters"
                                    " ORDER BY id DESC LIMIT ?"), (limit,))
        return [DeadLetterRow(*row) for row in rows]

    def purge_dead_letters(self, before_ms: int, limit: int) -> int:
        return self._purge_oldest("dead_letters", "at_ms", before_ms, limit)

    def dead_letter_count(self) -> int:
        return int(self._read("SELECT count(*) FROM dead_letters")[0][0])

    def save_model(self, name: str, data: bytes) -> None:
        with self._write() as cur:
            self._execute(cur, "INSERT INTO models (name, data) VALUES (?, ?)"
                          " ON CONFLICT (name) DO UPDATE SET data = excluded.data", (name, data))

    def load_model(self, name: str) -> bytes | None:
        rows = self._read(self._sql("SELECT data FROM models WHERE name = ?"), (name,))
        return bytes(rows[0][0]) if rows else None

