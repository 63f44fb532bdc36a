"""``SqliteStateStore``: the embedded default ``StateStore`` (stdlib sqlite3, one file).

WAL mode with ``synchronous=NORMAL``: readers never block the writer, and a commit is durable
across a process crash (a power cut can lose the last commits, never corrupt the file). Each
shard actor opens its own store on the shared file; several processes may write it at once,
their write transactions queue on SQLite's lock for up to ``busy_timeout_s``.

Every write call is one ``BEGIN IMMEDIATE`` transaction: taking the write lock up front makes
the fencing check and the write atomic, and spares SQLite lock upgrades that would deadlock.

Two things are kept off the writer's path, where they stalled shards under load (measured at
3,000 events/s: a p99 of 8.5 ms to take the lock and of 16-27 ms to commit):
- waiting for the lock: SQLite's own busy handler sleeps 1, 2, 5, 10... ms between tries, so a
  lock held 3 ms cost a waiter 8; this store polls in steps of at most 2 ms instead;
- checkpoints: a commit no longer copies the WAL into the database (with an fsync) when the
  WAL passes 1,000 pages; a background thread checkpoints every ``checkpoint_interval_s``.

Deleted content is zeroed only where that costs no extra write (``secure_delete = FAST``).
Debian's SQLite zeroes it everywhere by default, so each page freed when a snapshot truncates
the journal was written to the WAL once more, full of zeros: with the shard's write mix
(``benchmarks/bench_store.py``) a 256-customer snapshot step took 5.3-7.7 ms of CPU against
3.0-3.7, and 2,000 rounds of it grew the WAL by 364 MB against 303.
What a freed page held stays in the file until SQLite reuses the page or a ``VACUUM``.

SQLite rewinds the WAL only after a checkpoint has copied all of it, and a PASSIVE one never
catches up while writers keep appending: the WAL then grows until the writes pause (409-706
MB after 45 s of loadtest at 10,000 events/s; without end for a writer that never pauses).
Past ``wal_restart_bytes`` the checkpointer runs a RESTART checkpoint right after its PASSIVE
turn: it holds new writers back while it copies the few frames appended since and syncs the
database (11-14 ms measured), then the next writer rewinds the WAL and cuts the file back to
``wal_restart_bytes`` (``journal_size_limit``). The bound is high so that this is rare: at 64
MB (a RESTART every few seconds at 10,000 events/s) submit -> treatment p99.9 was 43-56
ms against 30-38; at 512 MB, once a minute or so, it stayed within the runs' noise.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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

_SCHEMA = """
CREATE TABLE IF NOT EXISTS partitions (
    partition INTEGER PRIMARY KEY,
    epoch INTEGER NOT NULL,
    owner TEXT NOT NULL,
    journal_mark INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS snapshots (
    customer_id TEXT PRIMARY KEY,
    partition INTEGER NOT NULL,
    data BLOB NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS snapshots_by_partition ON snapshots (partition, customer_id);
CREATE TABLE IF NOT EXISTS journal_entries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS timers (
    customer_id TEXT NOT NULL,
    timer_id TEXT NOT NULL,
    partition INTEGER NOT NULL,
    due_ms INTEGER NOT NULL,
    payload BLOB NOT NULL,
    PRIMARY KEY (customer_id, timer_id)
);
CREATE INDEX IF NOT EXISTS timers_by_due ON timers (partition, due_ms);
CREATE TABLE IF NOT EXISTS treatments (
    idempotency_key TEXT PRIMARY KEY,
    treatment_id TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    action_id TEXT NOT NULL,
    decided_at_ms INTEGER NOT NULL,
    payload BLOB NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    next_attempt_at_ms INTEGER NOT NULL DEFAULT 0,
    dispatched_at_ms INTEGER,
    decision_id INTEGER
);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY,
    customer_id TEXT NOT NULL,
    decided_at_ms INTEGER NOT NULL,
    data BLOB NOT NULL,
    treated INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS decisions_by_time ON decisions (decided_at_ms);
CREATE INDEX IF NOT EXISTS treatments_by_time ON treatments (decided_at_ms);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    reason TEXT NOT NULL,
    field TEXT NOT NULL,
    payload BLOB NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_by_time ON dead_letters (at_ms);
CREATE TABLE IF NOT EXISTS models (
    name TEXT PRIMARY KEY,
    data BLOB NOT NULL
);
"""

# Fencing in one read (``_check``): any change to a partition's epoch, by whatever code writes
# the file, bumps the one-row generation in the same transaction, so a writer re-reads the
# epochs it checked before only when the generation moved. Triggers, not the store's code, do
# the bump, so an older process sharing the file cannot move an epoch unseen.
_FENCING = (
    "CREATE TABLE IF NOT EXISTS fencing ("
    " id INTEGER PRIMARY KEY CHECK (id = 1), generation INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO fencing (id, generation) VALUES (1, 0)",
    *(f"CREATE TRIGGER IF NOT EXISTS fencing_on_{name} AFTER {event} ON partitions"
      " BEGIN UPDATE fencing SET generation = generation + 1; END"
      for name, event in (("insert", "INSERT"), ("epoch", "UPDATE OF epoch"),
                          ("delete", "DELETE"))),
)

# A customer's first snapshot takes the next rowid in its partition's range (partition << 32
# onwards), so the rows of a partition lie together and a snapshot step, which writes a few
# partitions, dirties fewer pages: 2.1 against 4.0 KB of WAL and 6.4 against 9.6 µs of CPU
# per row, measured alone (10,000 customers, 1.4 KB rows). Rows written before keep theirs.
_SAVE_SNAPSHOT = (
    "INSERT INTO snapshots (rowid, customer_id, partition, data, updated_at_ms) VALUES ("
    "(SELECT coalesce(max(rowid), ?1 << 32) + 1 FROM snapshots"
    " WHERE rowid >= ?1 << 32 AND rowid < (?1 + 1) << 32), ?2, ?1, ?3, ?4)"
    " ON CONFLICT (customer_id) DO UPDATE SET"
    " data = excluded.data, updated_at_ms = excluded.updated_at_ms")

log = logging.getLogger(__name__)
_IN_PARTITIONS = "partition IN (SELECT value FROM json_each(?))"
LOCK_POLL_S = (0.0002, 0.0005, 0.001, 0.002)  # waits between tries for the write lock
WAL_RESTART_BYTES = 512 * 1024 * 1024  # the WAL's size before the checkpointer rewinds it
RESTART_TRIES = 50  # a RESTART checkpoint's tries for the writer lock and the readers


class SqliteStateStore(SqlStoreCommon):
    """One connection to one SQLite file; safe to share between the threads of a process."""

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 30.0,
                 page_size: int = 5000, checkpoint_interval_s: float = 1.0,
                 wal_restart_bytes: int = WAL_RESTART_BYTES) -> None:
        require_positive(page_size, "page_size")
        require_positive(wal_restart_bytes, "wal_restart_bytes")
        if not checkpoint_interval_s > 0:
            raise StoreUsageError(f"must be > 0, got {checkpoint_interval_s}",
                                  field="checkpoint_interval_s")
        self.wal_restart_bytes = wal_restart_bytes
        self.path = str(path)
        self.page_size = page_size
        self.busy_timeout_s = busy_timeout_s
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._write_times = StepTimes(WRITE_BOUNDS_MS)  # under _lock
        # the epochs this connection found current, at the fencing generation it read then
        self._fence_generation: int | None = None
        self._current_epochs: dict[int, int] = {}
        with _unavailable_on_driver_error():
            self._conn = sqlite3.connect(self.path, timeout=busy_timeout_s,
                                         isolation_level=None, check_same_thread=False)
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._conn.execute("PRAGMA secure_delete = FAST")  # see the module's docstring
            self._conn.execute("PRAGMA wal_autocheckpoint = 0")  # the checkpointer's job
            # the writer that rewinds the WAL cuts the file back to this size
            self._conn.execute(f"PRAGMA journal_size_limit = {wal_restart_bytes}")
        with self._write() as cur:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    cur.execute(statement)
            _migrate_journal(cur)
            _migrate_outbox(cur)
            _migrate_audit(cur)
            cur.execute(PENDING_INDEX)
            for statement in _FENCING:
                cur.execute(statement)
        self._conn.execute("PRAGMA busy_timeout = 0")  # _waiting polls for locks instead
        self._closing = threading.Event()
        self._checkpointer: threading.Thread | None = None
        if self.path != ":memory:":
            self._checkpointer = threading.Thread(
                target=self._checkpoint_loop, args=(checkpoint_interval_s,),
                name=f"sqlite-checkpoint-{Path(self.path).name}", daemon=True)
            self._checkpointer.start()

    def close(self) -> None:
        self._closing.set()
        if self._checkpointer is not None:
            self._checkpointer.join()
        with self._lock:
            self._conn.close()

    def _checkpoint_loop(self, interval_s: float) -> None:
        """Copy committed WAL frames into the database, off the writers' path (the sqlite3
        module lets go of the GIL while SQLite works). PASSIVE never waits for a lock: what
        readers still use is copied on a later turn."""
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 0")  # RESTART polls for its locks (_restart)
        page_bytes = int(conn.execute("PRAGMA page_size").fetchone()[0])
        try:
            while not self._closing.wait(interval_s):
                try:
                    frames, _ = _checkpoint(conn)
                    if frames * page_bytes > self.wal_restart_bytes:
                        _restart(conn)
                except sqlite3.Error as exc:  # a thread boundary: the next turn tries again
                    log.warning("sqlite checkpoint of %s failed: %s", self.path, exc)
        finally:
            conn.close()

    def checkpoint(self) -> tuple[int, int]:
        """Checkpoint now: (WAL frames, frames copied into the database)."""
        with self._lock, _unavailable_on_driver_error():
            return _checkpoint(self._conn)

    def __enter__(self) -> SqliteStateStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Cursor]:
        """One write transaction, holding SQLite's write lock from its start."""
        with self._lock, _unavailable_on_driver_error():
            cur = self._conn.cursor()
            asked = time.perf_counter()
            self._waiting(cur, "BEGIN IMMEDIATE")
            began = time.perf_counter()
            try:
                yield cur
                written = time.perf_counter()
                cur.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
            self._timed("waiting for the write lock", asked, began, written)

    def _waiting(self, cur: sqlite3.Cursor, sql: str,
                 params: Sequence[Any] | Mapping[str, Any] = ()) -> sqlite3.Cursor:
        """Run a statement, polling in short steps while another connection holds the lock
        it needs (the write lock, for ``BEGIN IMMEDIATE``); past ``busy_timeout_s`` the
        ``database is locked`` error goes up."""
        deadline = time.monotonic() + self.busy_timeout_s
        tries = 0
        while True:
            try:
                return cur.execute(sql, params)
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(LOCK_POLL_S[min(tries, len(LOCK_POLL_S) - 1)])
            tries += 1

    def _read(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[Any]:
        with self._lock, _unavailable_on_driver_error():
            return self._waiting(self._conn.cursor(), sql, params).fetchall()

    @staticmethod
    def _epochs(cur: sqlite3.Cursor, partitions: Sequence[int]) -> dict[int, int]:
        rows = cur.execute(f"SELECT partition, epoch FROM partitions WHERE {_IN_PARTITIONS}",
                           (json.dumps(list(partitions)),))
        return dict(rows.fetchall())

    def _check(self, cur: sqlite3.Cursor, partition_epochs: Mapping[int, int]) -> None:
        """Raise ``FencedError`` unless every partition is at the epoch given. Inside the
        write transaction, so no epoch can move before the write commits. While the fencing
        generation stands, the epochs found current before still are: only new pairs are
        read (a journal entry's ~110 partitions cost ~80 µs of CPU to read, the generation
        one row)."""
        if not partition_epochs:
            return
        [(generation,)] = cur.execute("SELECT generation FROM fencing").fetchall()
        if generation != self._fence_generation:
            self._fence_generation = generation
            self._current_epochs = {}
        current = self._current_epochs
        unseen = {p: e for p, e in partition_epochs.items() if current.get(p) != e}
        if unseen:
            check_epochs(unseen, self._epochs(cur, list(unseen)))
            current.update(unseen)

    # -- fencing ----------------------------------------------------------------------------
    def acquire_partitions(self, partitions: Sequence[int], owner: str) -> int:
        require_partitions(partitions)
        with self._write() as cur:
            current = self._epochs(cur, partitions)
            epoch = max(current.get(p, 0) for p in partitions) + 1
            cur.executemany(
                "INSERT INTO partitions (partition, epoch, owner) VALUES (?, ?, ?)"
                " ON CONFLICT (partition) DO UPDATE SET epoch = excluded.epoch,"
                " owner = excluded.owner",
                [(p, epoch, owner) for p in partitions],
            )
            return epoch

    def partition_epochs(self, partitions: Sequence[int]) -> dict[int, int]:
        with self._lock:
            current = self._epochs(self._conn.cursor(), partitions)
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
        with self._write() as cur:
            self._check(cur, partition_epochs)
            cur.executemany(_SAVE_SNAPSHOT, [(r.partition, r.customer_id, r.data, r.updated_at_ms)
                                             for r in last_wins_snapshots(rows)])
            if journal_covered_to is not None:
                cur.execute(f"UPDATE partitions SET journal_mark = max(journal_mark, ?)"
                            f" WHERE {_IN_PARTITIONS}",
                            (journal_covered_to, json.dumps(list(partition_epochs))))
                cur.execute("DELETE FROM journal_entries"
                            " WHERE seq <= (SELECT min(journal_mark) FROM partitions)")

    # -- event journal ----------------------------------------------------------------------
    def append_journal(self, partition_epochs: Mapping[int, int], data: bytes) -> int:
        require_partitions(partition_epochs, "partition_epochs")
        with self._write() as cur:
            self._check(cur, partition_epochs)
            cur.execute("INSERT INTO journal_entries (data) VALUES (?)", (data,))
            return int(cur.lastrowid or 0)

    def journal_marks(self, partitions: Sequence[int]) -> dict[int, int]:
        marks = dict(self._read(f"SELECT partition, journal_mark FROM partitions"
                                f" WHERE {_IN_PARTITIONS}", (json.dumps(list(partitions)),)))
        return {p: marks.get(p, 0) for p in partitions}

    def read_journal(self, after_seq: int = 0, limit: int | None = None) -> list[JournalEntry]:
        if limit is not None:
            require_positive(limit, "limit")
        rows = self._read("SELECT seq, data FROM journal_entries WHERE seq > ? ORDER BY seq"
                          " LIMIT ?", (after_seq, limit or -1))
        return [JournalEntry(*row) for row in rows]

    # -- durable timers ---------------------------------------------------------------------
    def put_timers(self, partition_epochs: Mapping[int, int], rows: Sequence[TimerRow]) -> None:
        require_epochs(partition_epochs, (row.partition for row in rows), "rows")
        with self._write() as cur:
            self._check(cur, partition_epochs)
            cur.executemany(
                "INSERT INTO timers (customer_id, timer_id, partition, due_ms, payload)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (customer_id, timer_id) DO UPDATE SET"
                " partition = excluded.partition, due_ms = excluded.due_ms,"
                " payload = excluded.payload",
                [(r.customer_id, r.timer_id, r.partition, r.due_ms, r.payload)
                 for r in last_wins_timers(rows)],
            )

    def delete_timers(self, partition_epochs: Mapping[int, int], keys: Sequence[TimerKey]) -> int:
        require_epochs(partition_epochs, (key.partition for key in keys), "keys")
        with self._write() as cur:
            self._check(cur, partition_epochs)
            if not keys:
                return 0
            cur.executemany(
                "DELETE FROM timers WHERE customer_id = ? AND timer_id = ? AND partition = ?",
                [(k.customer_id, k.timer_id, k.partition) for k in keys],
            )
            return cur.rowcount

    def load_timers(self, partitions: Sequence[int]) -> list[TimerRow]:
        rows = self._read(
            "SELECT customer_id, partition, timer_id, due_ms, payload FROM timers"
            f" WHERE {_IN_PARTITIONS} ORDER BY due_ms, customer_id, timer_id",
            (json.dumps(list(partitions)),),
        )
        return [TimerRow(*row) for row in rows]

    def due_timers(self, partitions: Sequence[int], now_ms: int, limit: int) -> list[TimerRow]:
        require_positive(limit, "limit")
        rows = self._read(
            "SELECT customer_id, partition, timer_id, due_ms, payload FROM timers"
            f" WHERE {_IN_PARTITIONS} AND due_ms <= ?"
            " ORDER BY due_ms, customer_id, timer_id LIMIT ?",
            (json.dumps(list(partitions)), now_ms, limit),
        )
        return [TimerRow(*row) for row in rows]

    # -- treatment ledger and outbox --------------------------------------------------------
    def record_treatments(self, rows: Sequence[TreatmentRow], *,
                          decisions: Sequence[DecisionRow] = ()) -> list[bool]:
        recorded: list[bool] = []
        if not rows:
            self.append_decisions(decisions)
            return recorded
        carrier = _carriers(rows, decisions)  # treatment row -> the decision it leads to
        carried = set(carrier.values())
        with self._write() as cur:
            ids = []
            for index, d in enumerate(decisions):
                cur.execute("INSERT INTO decisions (customer_id, decided_at_ms, data, treated)"
                            " VALUES (?, ?, ?, ?)", (d.customer_id, d.decided_at_ms, d.data,
                                                     int(index in carried)))
                ids.append(cur.lastrowid)
            for index, r in enumerate(rows):
                decision_id = ids[carrier[index]] if index in carrier else None
                cur.execute(
                    "INSERT INTO treatments (idempotency_key, treatment_id, customer_id,"
                    " action_id, decided_at_ms, payload, status, next_attempt_at_ms,"
                    " decision_id) VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?)"
                    " ON CONFLICT (idempotency_key) DO NOTHING",
                    (r.idempotency_key, r.treatment_id, r.customer_id, r.action_id,
                     r.decided_at_ms, r.payload, r.decided_at_ms, decision_id),
                )
                recorded.append(cur.rowcount == 1)
                if decision_id is not None and not recorded[-1]:  # a key sent before: Explain
                    cur.execute("UPDATE decisions SET treated = 0 WHERE id = ?",  # finds the
                                (decision_id,))  # decision by its customer instead
        return recorded

    # -- decision audit ---------------------------------------------------------------------
    def append_decisions(self, rows: Sequence[DecisionRow]) -> None:
        if not rows:
            return
        with self._write() as cur:
            cur.executemany("INSERT INTO decisions (customer_id, decided_at_ms, data)"
                            " VALUES (?, ?, ?)",
                            [(r.customer_id, r.decided_at_ms, r.data) for r in rows])

    def recent_decisions(self, customer_id: str, limit: int) -> list[DecisionRow]:
        """The customer's untreated decisions through their index, and its treated ones
        through its ledger rows (their keys begin with the customer's id, see ``_carriers``)."""
        require_positive(limit, "limit")
        rows = self._read(
            "SELECT customer_id, decided_at_ms, data FROM ("
            " SELECT * FROM (SELECT id, customer_id, decided_at_ms, data FROM decisions"
            "  WHERE customer_id = :c AND treated = 0"
            "  ORDER BY decided_at_ms DESC, id DESC LIMIT :n)"
            " UNION ALL"
            " SELECT d.id, d.customer_id, d.decided_at_ms, d.data"
            "  FROM treatments t JOIN decisions d ON d.id = t.decision_id"
            "  WHERE t.idempotency_key >= :low AND t.idempotency_key < :high"
            "  AND t.customer_id = :c AND d.customer_id = :c AND d.treated = 1"
            "  AND d.decided_at_ms = t.decided_at_ms"
            ") ORDER BY decided_at_ms DESC, id DESC LIMIT :n",
            {"c": customer_id, "n": limit, **_key_range(customer_id)})
        return [DecisionRow(*row) for row in rows]

    def purge_treatments(self, before_ms: int, limit: int) -> int:
        """As the contract says; a purged treatment's decision, if still kept, goes back to
        being found by its customer."""
        require_positive(limit, "limit")
        with self._write() as cur:
            doomed = cur.execute(
                "SELECT idempotency_key, decision_id FROM treatments WHERE decided_at_ms < ?"
                " AND status <> 'pending' ORDER BY decided_at_ms LIMIT ?",
                (before_ms, limit)).fetchall()
            cur.executemany("UPDATE decisions SET treated = 0 WHERE id = ? AND treated = 1",
                            [(decision_id,) for _, decision_id in doomed
                             if decision_id is not None])
            cur.executemany("DELETE FROM treatments WHERE idempotency_key = ?",
                            [(key,) for key, _ in doomed])
        return len(doomed)

    # -- dead letters -----------------------------------------------------------------------
    def dead_letter(self, rows: Sequence[DeadLetterRow]) -> None:
        if not rows:
            return
        with self._write() as cur:
            cur.executemany(
                "INSERT INTO dead_letters (kind, reason, field, payload, at_ms)"
                " VALUES (?, ?, ?, ?, ?)",
                [(r.kind, r.reason, r.field, r.payload, r.at_ms) for r in rows],
            )

    # -- propensity models ------------------------------------------------------------------

def _key_prefix(customer_id: str) -> str:
    """What every idempotency key an engine makes for this customer begins with."""
    return f"{customer_id}|"


def _key_range(customer_id: str) -> dict[str, str]:
    """The keys beginning with ``_key_prefix``, as a range of the ledger's key index."""
    return {"low": _key_prefix(customer_id), "high": f"{customer_id}}}"}  # '}' follows '|'


def _carriers(rows: Sequence[TreatmentRow],
              decisions: Sequence[DecisionRow]) -> dict[int, int]:
    """Which treatment row carries which decision (indexes): the first treatment of the
    decision's customer and time whose key begins with the customer's id.

    Explain finds such a decision through the ledger's key index (``recent_decisions``), not
    through an index by customer: an insert into that index dirtied a random page, 17-29 %
    of a treatment's ledger CPU and 29-35 % of its WAL bytes (``bench_store.py``: 200,000
    customers, 8 and 30 treatments per call). Any other decision is ``treated = 0``, in the
    partial index."""
    wanting: dict[tuple[str, int], int] = {}  # (customer, time) -> its decision
    for index, d in enumerate(decisions):
        wanting.setdefault((d.customer_id, d.decided_at_ms), index)
    carrier: dict[int, int] = {}
    for index, r in enumerate(rows):
        if wanting and r.idempotency_key.startswith(_key_prefix(r.customer_id)):
            found = wanting.pop((r.customer_id, r.decided_at_ms), None)
            if found is not None:
                carrier[index] = found
    return carrier


def _migrate_audit(cur: sqlite3.Cursor) -> None:
    """A file written before treated decisions were found through the ledger: every decision
    it holds stays untreated, in the partial index by customer that replaces the full one."""
    if "treated" not in {row[1] for row in cur.execute("PRAGMA table_info(decisions)")}:
        cur.execute("ALTER TABLE decisions ADD COLUMN treated INTEGER NOT NULL DEFAULT 0")
    if "decision_id" not in {row[1] for row in cur.execute("PRAGMA table_info(treatments)")}:
        cur.execute("ALTER TABLE treatments ADD COLUMN decision_id INTEGER")
    cur.execute("DROP INDEX IF EXISTS decisions_by_customer")
    cur.execute("CREATE INDEX IF NOT EXISTS decisions_untreated_by_customer"
                " ON decisions (customer_id, decided_at_ms, id) WHERE treated = 0")


def _migrate_outbox(cur: sqlite3.Cursor) -> None:
    """A file written while the outbox was a table of its own: its columns move into the
    treatments rows (``OUTBOX_COLUMNS``), and the table goes."""
    if not cur.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'outbox'"
                       ).fetchone():
        return
    columns = {row[1] for row in cur.execute("PRAGMA table_info(treatments)")}
    for name, declaration in OUTBOX_COLUMNS:
        if name not in columns:
            cur.execute(f"ALTER TABLE treatments ADD COLUMN {name} {declaration}")
    cur.execute(MOVE_OUTBOX)
    cur.execute("DROP TABLE outbox")


def _migrate_journal(cur: sqlite3.Cursor) -> None:
    """A file written before the journal took one entry per batch: its per-partition entries
    (each a list of events, as a batch is) move to ``journal_entries`` in their replay order,
    and ``partitions`` gains the marks (0: nothing covered yet)."""
    columns = {row[1] for row in cur.execute("PRAGMA table_info(partitions)")}
    if "journal_mark" not in columns:
        cur.execute("ALTER TABLE partitions ADD COLUMN journal_mark INTEGER NOT NULL DEFAULT 0")
    if cur.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'journal'"
                   ).fetchone():
        cur.execute("INSERT INTO journal_entries (data)"
                    " SELECT data FROM journal ORDER BY partition, seq")
        cur.execute("DROP TABLE journal")


def _checkpoint(conn: sqlite3.Connection) -> tuple[int, int]:
    """A PASSIVE checkpoint: (WAL frames, frames copied into the database)."""
    _, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return int(frames), int(copied)


def _restart(conn: sqlite3.Connection) -> None:
    """A RESTART checkpoint, tried in short steps: while it waits for the writer lock it holds
    new writers back, so it never sleeps in SQLite's busy handler (1, 2, 5, 10... ms). A busy
    try still copies what it can, as a PASSIVE one does; past the tries, the next turn."""
    for _ in range(RESTART_TRIES):
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
        if not busy:
            return
        time.sleep(LOCK_POLL_S[-1])


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    message = str(exc)
    return "database is locked" in message or "database is busy" in message


@contextmanager
def _unavailable_on_driver_error() -> Iterator[None]:
    """``database is locked`` (past the busy timeout), unopenable file... -> StoreUnavailable."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        raise StoreUnavailable(str(exc), backend="sqlite") from exc


