"""``PostgresStateStore``: the ``StateStore`` on PostgreSQL (psycopg 3), for clusters.

All tables live in one schema (``shush`` unless told), created idempotently, so that several
engines or test runs can share a database. Every write call is one transaction. Fencing: a
partition-scoped write locks its partitions' rows ``FOR SHARE`` (``FOR UPDATE`` where it raises
their journal marks) and checks their epochs before writing; ``acquire_partitions`` locks them
``FOR UPDATE``, so an acquisition and a write for the same partition never interleave. Rows are
always locked in partition order, which keeps concurrent calls free of deadlocks.

Every decision is in the index by customer that Explain reads. The SQLite store finds a treated
decision through its ledger row instead (the treatments' keys begin with the customer's id), to
spare a random index page per treatment; here a range of text keys follows the database's
collation, under which one customer's keys need not lie between ``alice|`` and ``alice}``
(a linguistic collation may weigh punctuation last, or order ``|`` and ``}`` otherwise).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

import psycopg
from psycopg import sql

from ...actors.step_times import WRITE_BOUNDS_MS, StepTimes
from ...engine.errors import StoreUnavailable, StoreUsageError
from ...engine.store import (
    DeadLetterRow,
    DecisionRow,
    JournalEntry,
    SnapshotRow,
    TimerKey,
    TimerRow,
    TreatmentRow,
    check_epochs,
    last_wins_snapshots,
    last_wins_timers,
    require_epochs,
    require_partitions,
    require_positive,
)
from .sql_common import MOVE_OUTBOX, OUTBOX_COLUMNS, PENDING_INDEX, SqlStoreCommon

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

_TABLES = """
CREATE TABLE IF NOT EXISTS partitions (
    partition INTEGER PRIMARY KEY,
    epoch BIGINT NOT NULL,
    owner TEXT NOT NULL,
    journal_mark BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS snapshots (
    customer_id TEXT PRIMARY KEY,
    partition INTEGER NOT NULL,
    data BYTEA NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS snapshots_by_partition ON snapshots (partition, customer_id);
CREATE TABLE IF NOT EXISTS journal_entries (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    data BYTEA NOT NULL
);
ALTER TABLE partitions ADD COLUMN IF NOT EXISTS journal_mark BIGINT NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS timers (
    customer_id TEXT NOT NULL,
    timer_id TEXT NOT NULL,
    partition INTEGER NOT NULL,
    due_ms BIGINT NOT NULL,
    payload BYTEA NOT NULL,
    PRIMARY KEY (customer_id, timer_id)
);
CREATE INDEX IF NOT EXISTS timers_by_due ON timers (partition, due_ms);
CREATE TABLE IF NOT EXISTS treatments (
    idempotency_key TEXT PRIMARY KEY,
    treatment_id TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    action_id TEXT NOT NULL,
    decided_at_ms BIGINT NOT NULL,
    payload BYTEA NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    next_attempt_at_ms BIGINT NOT NULL DEFAULT 0,
    dispatched_at_ms BIGINT
);
CREATE TABLE IF NOT EXISTS decisions (
    id BIGSERIAL PRIMARY KEY,
    customer_id TEXT NOT NULL,
    decided_at_ms BIGINT NOT NULL,
    data BYTEA NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_by_customer ON decisions (customer_id, decided_at_ms, id);
CREATE INDEX IF NOT EXISTS decisions_by_time ON decisions (decided_at_ms);
CREATE INDEX IF NOT EXISTS treatments_by_time ON treatments (decided_at_ms);
CREATE TABLE IF NOT EXISTS dead_letters (
    id BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL,
    reason TEXT NOT NULL,
    field TEXT NOT NULL,
    payload BYTEA NOT NULL,
    at_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_by_time ON dead_letters (at_ms);
CREATE TABLE IF NOT EXISTS models (
    name TEXT PRIMARY KEY,
    data BYTEA NOT NULL
);
"""



class PostgresStateStore(SqlStoreCommon):
    """One connection, to one schema; safe to share between the threads of a process."""

    def __init__(self, url: str, *, schema: str = "shush", connect_timeout_s: int = 10,
                 page_size: int = 5000) -> None:
        if not _SCHEMA_NAME.match(schema):
            raise StoreUsageError("must be a lower-case SQL identifier", field="schema")
        require_positive(page_size, "page_size")
        self.schema = schema
        self.page_size = page_size
        self._lock = threading.Lock()
        self._write_times = StepTimes(WRITE_BOUNDS_MS)  # under _lock
        with _unavailable_on_driver_error():
            self._conn = psycopg.connect(url, autocommit=True,
                                         connect_timeout=connect_timeout_s)
        ident = sql.Identifier(schema)
        with self._write() as cur:
            # CREATE ... IF NOT EXISTS races with itself; serialize per schema name.
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%b))", (schema,))
            cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident))
            cur.execute(sql.SQL("SET search_path TO {}").format(ident))  # for the session
            for statement in _TABLES.split(";"):
                if statement.strip():
                    cur.execute(statement)
            if cur.execute("SELECT to_regclass('journal')").fetchone()[0] is not None:
                # written before one entry per batch: the per-partition entries (each a list
                # of events, as a batch is) move over in their replay order
                cur.execute("INSERT INTO journal_entries (data)"
                            " SELECT data FROM journal ORDER BY partition, seq")
                cur.execute("DROP TABLE journal")
            if cur.execute("SELECT to_regclass('outbox')").fetchone()[0] is not None:
                # written while the outbox was a table of its own: its columns move into
                # the treatments rows
                for name, declaration in OUTBOX_COLUMNS:
                    cur.execute(f"ALTER TABLE treatments ADD COLUMN IF NOT EXISTS"
                                f" {name} {declaration}")
                cur.execute(MOVE_OUTBOX)
                cur.execute("DROP TABLE outbox")
            cur.execute(PENDING_INDEX)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> PostgresStateStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[psycopg.Cursor[Any]]:
        """One transaction; rolled back if the body raises."""
        with self._lock, _unavailable_on_driver_error():
            asked = time.perf_counter()
            with self._conn.transaction(), self._conn.cursor() as cur:
                began = time.perf_counter()
                yield cur
                written = time.perf_counter()
            self._timed("begin", asked, began, written)

    def _one(self, query: str, params: Sequence[Any], *, prepare: bool | None = None
             ) -> list[Any]:
        """One statement as its own transaction (the connection autocommits): one round trip,
        where ``_write`` takes more (BEGIN, one per statement, COMMIT), each a wake-up of the
        server and of this process: a journal append fenced by one partition took 1,154 us of
        wall time in four, 569-700 in one. Returns its rows; its commit counts in its
        statement's time. ``prepare=False``: planned with its parameters (see ``_execute``)."""
        with self._lock, _unavailable_on_driver_error():
            began = time.perf_counter()
            cur = self._conn.execute(query, params, prepare=prepare)
            rows = cur.fetchall() if cur.description else []
            written = time.perf_counter()
            self._timed("begin", began, began, written)
            return rows

    def _fenced(self, partition_epochs: Mapping[int, int]) -> NoReturn:
        """Raise ``FencedError`` for a write that found an epoch not current (epochs only
        rise, so a second look finds it too)."""
        check_epochs(partition_epochs, self.partition_epochs(list(partition_epochs)))
        raise StoreUnavailable("a write found an epoch not current, and a second look found "
                               "them all current; retry", backend="postgres")

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%b")  # psycopg's placeholder, binary (see ``_one``)

    def _read(self, query: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock, _unavailable_on_driver_error():
            return self._conn.execute(query, params, binary=True).fetchall()

    def _execute(self, cur: psycopg.Cursor[Any], sql: str, params: Sequence[Any]) -> int:
        """Planned with its parameters at each execution, never prepared.

        psycopg prepares a statement at its sixth execution, and PostgreSQL may then keep the
        generic plan it made for a ledger of a few rows. For the outbox's updates (a key, and
        ``status = 'pending'``) that plan scanned the partial index of pending rows
        (``treatments_pending``, whose predicate the query implies) instead of the primary
        key; that index keeps an entry for every row updated since the last vacuum, so each
        mark cost more as the ledger grew: 132 to 562 us of server CPU per treatment over the
        first 24,000 treatments (``benchmarks/bench_store.py``), 47-78 us and flat planned
        each time. These statements are few per round; planning them costs little."""
        cur.execute(self._sql(sql), params, prepare=False)
        return int(cur.rowcount)

    @staticmethod
    def _check(cur: psycopg.Cursor[Any], partition_epochs: Mapping[int, int], *,
               for_update: bool = False) -> None:
        if not partition_epochs:
            return
        rows = cur.execute(
            "SELECT partition, epoch FROM partitions WHERE partition = ANY(%b::bigint[])"
            f" ORDER BY partition FOR {'UPDATE' if for_update else 'SHARE'}",
            (sorted(partition_epochs),),
        ).fetchall()
        check_epochs(partition_epochs, dict(rows))

    # -- fencing ----------------------------------------------------------------------------
    def acquire_partitions(self, partitions: Sequence[int], owner: str) -> int:
        require_partitions(partitions)
        ordered = sorted(set(partitions))
        with self._write() as cur:
            cur.execute(
                "INSERT INTO partitions (partition, epoch, owner)"
                " SELECT p, 0, '' FROM unnest(%b::int[]) AS p ORDER BY p"
                " ON CONFLICT (partition) DO NOTHING",
                (ordered,),
            )
            rows = cur.execute(
                "SELECT epoch FROM partitions WHERE partition = ANY(%b::bigint[])"
                " ORDER BY partition FOR UPDATE",
                (ordered,),
            ).fetchall()
            epoch = max(int(row[0]) for row in rows) + 1
            cur.execute(
                "UPDATE partitions SET epoch = %b, owner = %b WHERE partition = ANY(%b::bigint[])",
                (epoch, owner, ordered),
            )
            return epoch

    def partition_epochs(self, partitions: Sequence[int]) -> dict[int, int]:
        rows = self._read("SELECT partition, epoch FROM partitions"
                          " WHERE partition = ANY(%b::bigint[])", (list(partitions),))
        current = dict(rows)
        return {p: current.get(p, 0) for p in partitions}

    # -- customer snapshots -----------------------------------------------------------------
    def save_snapshots(
        self,
        partition_epochs: Mapping[int, int],
        rows: Sequence[SnapshotRow],
        *,
        journal_covered_to: int | None = None,
    ) -> None:
        require_epochs(partition_epochs, (row.partition for row in rows), "rows")
        unique = last_wins_snapshots(rows)
        with self._write() as cur:
            self._check(cur, partition_epochs, for_update=journal_covered_to is not None)
            if unique:
                cur.execute(
                    "INSERT INTO snapshots (customer_id, partition, data, updated_at_ms)"
                    " SELECT * FROM unnest(%b::text[], %b::int[], %b::bytea[], %b::bigint[])"
                    " ON CONFLICT (customer_id) DO UPDATE SET"
                    " data = excluded.data, updated_at_ms = excluded.updated_at_ms",
                    ([r.customer_id for r in unique], [r.partition for r in unique],
                     [r.data for r in unique], [r.updated_at_ms for r in unique]),
                )
            if journal_covered_to is not None:
                cur.execute("UPDATE partitions SET journal_mark = greatest(journal_mark, %b)"
                            " WHERE partition = ANY(%b::bigint[])",
                            (journal_covered_to, list(partition_epochs)))
                cur.execute("DELETE FROM journal_entries"
                            " WHERE seq <= (SELECT min(journal_mark) FROM partitions)")

    # -- event journal ----------------------------------------------------------------------
    def append_journal(self, partition_epochs: Mapping[int, int], data: bytes) -> int:
        """The epochs checked and the entry written in one statement: the partitions' rows are
        locked ``FOR SHARE`` as they are read, and an acquisition committed while the lock was
        awaited shows its new epoch (PostgreSQL re-reads a row it waited for), so no entry is
        written under a stale epoch."""
        require_partitions(partition_epochs, "partition_epochs")
        partitions = sorted(partition_epochs)
        rows = self._one(
            "INSERT INTO journal_entries (data) SELECT %b WHERE ("
            " SELECT count(*) FROM (SELECT partition, epoch FROM partitions"
            "  WHERE partition = ANY(%b::int[]) ORDER BY partition FOR SHARE) AS held"
            " JOIN unnest(%b::int[], %b::bigint[]) AS w (partition, epoch) USING (partition)"
            " WHERE held.epoch = w.epoch AND w.epoch <> 0) = %b RETURNING seq",
            (data, partitions, partitions, [partition_epochs[p] for p in partitions],
             len(partitions)))
        if not rows:
            self._fenced(partition_epochs)
        return int(rows[0][0])

    def journal_marks(self, partitions: Sequence[int]) -> dict[int, int]:
        marks = dict(self._read("SELECT partition, journal_mark FROM partitions"
                                " WHERE partition = ANY(%b::bigint[])", (list(partitions),)))
        return {p: int(marks.get(p, 0)) for p in partitions}

    def read_journal(self, after_seq: int = 0, limit: int | None = None) -> list[JournalEntry]:
        if limit is not None:
            require_positive(limit, "limit")
        rows = self._read("SELECT seq, data FROM journal_entries WHERE seq > %b ORDER BY seq"
                          " LIMIT %b", (after_seq, limit))
        return [JournalEntry(int(seq), bytes(data)) for seq, data in rows]

    # -- durable timers ---------------------------------------------------------------------
    def put_timers(self, partition_epochs: Mapping[int, int], rows: Sequence[TimerRow]) -> None:
        require_epochs(partition_epochs, (row.partition for row in rows), "rows")
        unique = last_wins_timers(rows)
        with self._write() as cur:
            self._check(cur, partition_epochs)
            if unique:
                cur.execute(
                    "INSERT INTO timers (customer_id, timer_id, partition, due_ms, payload)"
                    " SELECT * FROM unnest(%b::text[], %b::text[], %b::int[], %b::bigint[],"
                    " %b::bytea[]) ON CONFLICT (customer_id, timer_id) DO UPDATE SET"
                    " partition = excluded.partition, due_ms = excluded.due_ms,"
                    " payload = excluded.payload",
                    ([r.customer_id for r in unique], [r.timer_id for r in unique],
                     [r.partition for r in unique], [r.due_ms for r in unique],
                     [r.payload for r in unique]),
                )

    def delete_timers(self, partition_epochs: Mapping[int, int], keys: Sequence[TimerKey]) -> int:
        require_epochs(partition_epochs, (key.partition for key in keys), "keys")
        with self._write() as cur:
            self._check(cur, partition_epochs)
            if not keys:
                return 0
            cur.execute(
                "DELETE FROM timers t USING unnest(%b::text[], %b::text[], %b::int[])"
                " AS k (customer_id, timer_id, partition) WHERE t.customer_id = k.customer_id"
                " AND t.timer_id = k.timer_id AND t.partition = k.partition",
                ([k.customer_id for k in keys], [k.timer_id for k in keys],
                 [k.partition for k in keys]),
            )
            return cur.rowcount

    def load_timers(self, partitions: Sequence[int]) -> list[TimerRow]:
        rows = self._read(
            "SELECT customer_id, partition, timer_id, due_ms, payload FROM timers"
            " WHERE partition = ANY(%b::bigint[]) ORDER BY due_ms, customer_id, timer_id",
            (list(partitions),),
        )
        return [TimerRow(*row) for row in rows]

    def due_timers(self, partitions: Sequence[int], now_ms: int, limit: int) -> list[TimerRow]:
        require_positive(limit, "limit")
        rows = self._read(
            "SELECT customer_id, partition, timer_id, due_ms, payload FROM timers"
            " WHERE partition = ANY(%b::bigint[]) AND due_ms <= %b"
            " ORDER BY due_ms, customer_id, timer_id LIMIT %b",
            (list(partitions), now_ms, limit),
        )
        return [TimerRow(*row) for row in rows]

    # -- treatment ledger and outbox --------------------------------------------------------
    def record_treatments(self, rows: Sequence[TreatmentRow], *,
                          decisions: Sequence[DecisionRow] = ()) -> list[bool]:
        if not rows:
            self.append_decisions(decisions)
            return []
        first: dict[str, int] = {}
        for index, r in enumerate(rows):
            first.setdefault(r.idempotency_key, index)
        unique = [rows[index] for index in first.values()]
        new = {row[0] for row in self._one(  # the decisions and the ledger, one statement
            f"WITH decided AS ({_INSERT_DECISIONS})"
            " INSERT INTO treatments (idempotency_key, treatment_id, customer_id, action_id,"
            " decided_at_ms, payload, status, next_attempt_at_ms)"
            " SELECT k, t, c, a, d, p, 'pending', d FROM unnest(%b::text[], %b::text[],"
            " %b::text[], %b::text[], %b::bigint[], %b::bytea[]) AS u (k, t, c, a, d, p)"
            " ON CONFLICT (idempotency_key) DO NOTHING RETURNING idempotency_key",
            (*_decision_params(decisions),
             [r.idempotency_key for r in unique], [r.treatment_id for r in unique],
             [r.customer_id for r in unique], [r.action_id for r in unique],
             [r.decided_at_ms for r in unique], [r.payload for r in unique]))}
        return [r.idempotency_key in new and first[r.idempotency_key] == index
                for index, r in enumerate(rows)]

    def mark_dispatched(self, idempotency_keys: Sequence[str], at_ms: int) -> int:
        """One statement for all the keys (one round trip, not one per key), planned with
        them (``_execute``)."""
        if not idempotency_keys:
            return 0
        return len(self._one(
            "UPDATE treatments t SET status = 'dispatched', dispatched_at_ms = %b"
            " FROM unnest(%b::text[]) AS k (key)"
            " WHERE t.idempotency_key = k.key AND t.status = 'pending' RETURNING 1",
            (at_ms, list(idempotency_keys)), prepare=False))

    # -- decision audit ---------------------------------------------------------------------
    def append_decisions(self, rows: Sequence[DecisionRow]) -> None:
        if not rows:
            return
        self._one(_INSERT_DECISIONS, _decision_params(rows))

    # -- dead letters -----------------------------------------------------------------------
    def dead_letter(self, rows: Sequence[DeadLetterRow]) -> None:
        if not rows:
            return
        with self._write() as cur:
            cur.execute(
                "INSERT INTO dead_letters (kind, reason, field, payload, at_ms)"
                " SELECT kind, reason, field, payload, at_ms FROM unnest(%b::text[], %b::text[],"
                " %b::text[], %b::bytea[], %b::bigint[]) WITH ORDINALITY"
                " AS u (kind, reason, field, payload, at_ms, n) ORDER BY n",
                ([r.kind for r in rows], [r.reason for r in rows], [r.field for r in rows],
                 [r.payload for r in rows], [r.at_ms for r in rows]),
            )

    # -- propensity models ------------------------------------------------------------------

_INSERT_DECISIONS = (  # in the order given, so that their ids follow it
    "INSERT INTO decisions (customer_id, decided_at_ms, data)"
    " SELECT customer_id, decided_at_ms, data"
    " FROM unnest(%b::text[], %b::bigint[], %b::bytea[]) WITH ORDINALITY"
    " AS u (customer_id, decided_at_ms, data, n) ORDER BY n")


def _decision_params(rows: Sequence[DecisionRow]) -> tuple[list[str], list[int], list[bytes]]:
    return ([r.customer_id for r in rows], [r.decided_at_ms for r in rows],
            [r.data for r in rows])


@contextmanager
def _unavailable_on_driver_error() -> Iterator[None]:
    """Connection lost or refused, deadlock, lock timeout... -> StoreUnavailable."""
    try:
        yield
    except psycopg.OperationalError as exc:
        raise StoreUnavailable(str(exc).strip(), backend="postgres") from exc


