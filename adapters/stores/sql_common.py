"""What the SQLite and PostgreSQL stores do the same way: reads and single-row writes whose SQL
differs only in the placeholder (``?`` here; PostgreSQL's ``_sql`` turns it into ``%s``)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, cast

from ...engine.store import (
    DeadLetterRow,
    DecisionRow,
    OutboxItem,
    OutboxStatus,
    SnapshotRow,
    TreatmentRow,
    require_positive,
)

OUTBOX_SELECT = """
SELECT o.idempotency_key, t.treatment_id, t.customer_id, t.action_id, t.payload, o.status,
       o.attempts, o.last_error, o.enqueued_at_ms, o.next_attempt_at_ms, o.dispatched_at_ms
FROM outbox o JOIN treatments t ON t.idempotency_key = o.idempotency_key
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
        due = "" if now_ms is None else " AND o.next_attempt_at_ms <= ?"
        params = (limit,) if now_ms is None else (now_ms, limit)
        rows = self._read(self._sql(OUTBOX_SELECT + f" WHERE o.status = 'pending'{due}"
                                    " ORDER BY o.next_attempt_at_ms, o.idempotency_key LIMIT ?"),
                          params)
        return [outbox_item(row) for row in rows]

    def outbox_item(self, idempotency_key: str) -> OutboxItem | None:
        rows = self._read(self._sql(OUTBOX_SELECT + " WHERE o.idempotency_key = ?"),
                          (idempotency_key,))
        return outbox_item(rows[0]) if rows else None

    def mark_dispatched(self, idempotency_keys: Sequence[str], at_ms: int) -> int:
        if not idempotency_keys:
            return 0
        with self._write() as cur:
            return sum(self._execute(
                cur, "UPDATE outbox SET status = 'dispatched', dispatched_at_ms = ?"
                " WHERE idempotency_key = ? AND status = 'pending'",
                (at_ms, key)) for key in idempotency_keys)

    def mark_failed(
        self, idempotency_key: str, reason: str, attempts: int, *, retry_at_ms: int | None = None
    ) -> bool:
        with self._write() as cur:
            if retry_at_ms is None:
                return self._execute(
                    cur, "UPDATE outbox SET status = 'failed', attempts = ?, last_error = ?"
                    " WHERE idempotency_key = ? AND status = 'pending'",
                    (attempts, reason, idempotency_key)) == 1
            return self._execute(
                cur, "UPDATE outbox SET attempts = ?, last_error = ?, next_attempt_at_ms = ?"
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
            cur.execute(self._sql(
                "SELECT t.idempotency_key FROM treatments t"
                " JOIN outbox o ON o.idempotency_key = t.idempotency_key"
                " WHERE t.decided_at_ms < ? AND o.status <> 'pending'"
                " ORDER BY t.decided_at_ms LIMIT ?"), (before_ms, limit))
            keys = [(row[0],) for row in cur.fetchall()]
            for table in ("outbox", "treatments"):  # the outbox row refers to its treatment
                cur.executemany(self._sql(f"DELETE FROM {table} WHERE idempotency_key = ?"),
                                keys)
            return len(keys)

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

