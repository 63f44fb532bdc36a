"""``MemoryStateStore``: the in-memory ``StateStore``, for tests and throwaway runs.

Thread-safe (one lock); every call is atomic, like one transaction of the durable stores.
Nothing survives the process.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from ...actors.step_times import WRITE_BOUNDS_MS, StepTimes
from ...engine.store import (
    DeadLetterRow,
    DecisionRow,
    JournalEntry,
    OutboxItem,
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


class MemoryStateStore:
    """Keeps everything in dicts and lists under one lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._epochs: dict[int, int] = {}
        self._owners: dict[int, str] = {}
        self._snapshots: dict[int, dict[str, SnapshotRow]] = {}
        self._partition_of: dict[str, int] = {}
        self._journal: list[JournalEntry] = []
        self._journal_seq = 0
        self._marks: dict[int, int] = {}
        self._timers: dict[tuple[str, str], TimerRow] = {}
        self._treatments: dict[str, TreatmentRow] = {}
        self._outbox: dict[str, OutboxItem] = {}
        self._decisions: dict[str, list[tuple[int, int, DecisionRow]]] = {}
        self._decision_counter = itertools.count()
        self._dead_letters: list[DeadLetterRow] = []
        self._models: dict[str, bytes] = {}

    def close(self) -> None:
        """Nothing to release; the data stays readable through other references."""

    def write_times(self) -> dict[str, Any]:
        """No transactions: no stages."""
        return StepTimes(WRITE_BOUNDS_MS).to_wire()

    def __enter__(self) -> MemoryStateStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- fencing ----------------------------------------------------------------------------
    def acquire_partitions(self, partitions: Sequence[int], owner: str) -> int:
        require_partitions(partitions)
        with self._lock:
            epoch = max(self._epochs.get(p, 0) for p in partitions) + 1
            for partition in partitions:
                self._epochs[partition] = epoch
                self._owners[partition] = owner
            return epoch

    def partition_epochs(self, partitions: Sequence[int]) -> dict[int, int]:
        with self._lock:
            return {p: self._epochs.get(p, 0) for p in partitions}

    def _check(self, partition_epochs: Mapping[int, int]) -> None:
        check_epochs(partition_epochs, self._epochs)

    # -- customer snapshots -----------------------------------------------------------------
    def save_snapshots(
        self,
        partition_epochs: Mapping[int, int],
        rows: Sequence[SnapshotRow],
        *,
        journal_covered_to: int | None = None,
    ) -> None:
        require_epochs(partition_epochs, (row.partition for row in rows), "rows")
        with self._lock:
            self._check(partition_epochs)
            for row in last_wins_snapshots(rows):  # a customer keeps its first partition
                partition = self._partition_of.setdefault(row.customer_id, row.partition)
                self._snapshots.setdefault(partition, {})[row.customer_id] = row
            if journal_covered_to is not None:
                for partition in partition_epochs:
                    self._marks[partition] = max(self._marks.get(partition, 0),
                                                 journal_covered_to)
                covered = min(self._marks.get(p, 0) for p in self._epochs)
                self._journal = [e for e in self._journal if e.seq > covered]

    def load_snapshots(self, partitions: Sequence[int]) -> Iterator[SnapshotRow]:
        for partition in partitions:
            with self._lock:
                rows = sorted(self._snapshots.get(partition, {}).items())
            for _, row in rows:
                yield row

    def load_snapshot(self, customer_id: str) -> SnapshotRow | None:
        with self._lock:
            partition = self._partition_of.get(customer_id)
            return None if partition is None else self._snapshots[partition][customer_id]

    def load_snapshots_of(self, customer_ids: Sequence[str]) -> list[SnapshotRow]:
        with self._lock:
            return [self._snapshots[self._partition_of[c]][c]
                    for c in dict.fromkeys(customer_ids) if c in self._partition_of]

    # -- event journal ----------------------------------------------------------------------
    def append_journal(self, partition_epochs: Mapping[int, int], data: bytes) -> int:
        require_partitions(partition_epochs, "partition_epochs")
        with self._lock:
            self._check(partition_epochs)
            self._journal_seq += 1
            self._journal.append(JournalEntry(self._journal_seq, bytes(data)))
            return self._journal_seq

    def journal_marks(self, partitions: Sequence[int]) -> dict[int, int]:
        with self._lock:
            return {p: self._marks.get(p, 0) for p in partitions}

    def journal_end(self) -> int:
        with self._lock:
            return self._journal[-1].seq if self._journal else 0

    def read_journal(self, after_seq: int = 0, limit: int | None = None) -> list[JournalEntry]:
        if limit is not None:
            require_positive(limit, "limit")
        with self._lock:
            entries = [e for e in self._journal if e.seq > after_seq]
        return entries if limit is None else entries[:limit]

    # -- durable timers ---------------------------------------------------------------------
    def put_timers(self, partition_epochs: Mapping[int, int], rows: Sequence[TimerRow]) -> None:
        require_epochs(partition_epochs, (row.partition for row in rows), "rows")
        with self._lock:
            self._check(partition_epochs)
            for row in last_wins_timers(rows):
                self._timers[(row.customer_id, row.timer_id)] = row

    def delete_timers(self, partition_epochs: Mapping[int, int], keys: Sequence[TimerKey]) -> int:
        require_epochs(partition_epochs, (key.partition for key in keys), "keys")
        with self._lock:
            self._check(partition_epochs)
            deleted = 0
            for key in keys:
                row = self._timers.get((key.customer_id, key.timer_id))
                if row is not None and row.partition == key.partition:
                    del self._timers[(key.customer_id, key.timer_id)]
                    deleted += 1
            return deleted

    def load_timers(self, partitions: Sequence[int]) -> list[TimerRow]:
        wanted = set(partitions)
        with self._lock:
            rows = [row for row in self._timers.values() if row.partition in wanted]
        return sorted(rows, key=_timer_order)

    def due_timers(self, partitions: Sequence[int], now_ms: int, limit: int) -> list[TimerRow]:
        require_positive(limit, "limit")
        wanted = set(partitions)
        with self._lock:
            rows = [row for row in self._timers.values()
                    if row.partition in wanted and row.due_ms <= now_ms]
        return sorted(rows, key=_timer_order)[:limit]

    # -- treatment ledger and outbox --------------------------------------------------------
    def record_treatments(self, rows: Sequence[TreatmentRow], *,
                          decisions: Sequence[DecisionRow] = ()) -> list[bool]:
        recorded: list[bool] = []
        with self._lock:
            self._append_decisions(decisions)
            for row in rows:
                if row.idempotency_key in self._treatments:
                    recorded.append(False)
                    continue
                self._treatments[row.idempotency_key] = row
                self._outbox[row.idempotency_key] = OutboxItem(
                    idempotency_key=row.idempotency_key,
                    treatment_id=row.treatment_id,
                    customer_id=row.customer_id,
                    action_id=row.action_id,
                    payload=row.payload,
                    status="pending",
                    attempts=0,
                    last_error="",
                    enqueued_at_ms=row.decided_at_ms,
                    next_attempt_at_ms=row.decided_at_ms,
                    dispatched_at_ms=None,
                )
                recorded.append(True)
        return recorded

    def record_treatment(self, row: TreatmentRow) -> bool:
        return self.record_treatments([row])[0]

    def has_treatment(self, idempotency_key: str) -> bool:
        with self._lock:
            return idempotency_key in self._treatments

    def treatment_count(self) -> int:
        with self._lock:
            return len(self._treatments)

    def pending_outbox(self, limit: int, *, now_ms: int | None = None) -> list[OutboxItem]:
        require_positive(limit, "limit")
        with self._lock:
            items = [
                item for item in self._outbox.values()
                if item.status == "pending"
                and (now_ms is None or item.next_attempt_at_ms <= now_ms)
            ]
        items.sort(key=lambda item: (item.next_attempt_at_ms, item.idempotency_key))
        return items[:limit]

    def outbox_item(self, idempotency_key: str) -> OutboxItem | None:
        with self._lock:
            return self._outbox.get(idempotency_key)

    def mark_dispatched(self, idempotency_keys: Sequence[str], at_ms: int) -> int:
        marked = 0
        with self._lock:
            for key in idempotency_keys:
                item = self._outbox.get(key)
                if item is not None and item.status == "pending":
                    self._outbox[key] = replace(item, status="dispatched",
                                                dispatched_at_ms=at_ms)
                    marked += 1
        return marked

    def mark_failed(
        self, idempotency_key: str, reason: str, attempts: int, *, retry_at_ms: int | None = None
    ) -> bool:
        with self._lock:
            item = self._outbox.get(idempotency_key)
            if item is None or item.status != "pending":
                return False
            if retry_at_ms is None:
                item = replace(item, status="failed", attempts=attempts, last_error=reason)
            else:
                item = replace(item, attempts=attempts, last_error=reason,
                               next_attempt_at_ms=retry_at_ms)
            self._outbox[idempotency_key] = item
            return True

    # -- decision audit ---------------------------------------------------------------------
    def append_decisions(self, rows: Sequence[DecisionRow]) -> None:
        with self._lock:
            self._append_decisions(rows)

    def _append_decisions(self, rows: Sequence[DecisionRow]) -> None:
        for row in rows:
            entry = (row.decided_at_ms, next(self._decision_counter), row)
            self._decisions.setdefault(row.customer_id, []).append(entry)

    def recent_decisions(self, customer_id: str, limit: int) -> list[DecisionRow]:
        require_positive(limit, "limit")
        with self._lock:
            entries = list(self._decisions.get(customer_id, []))
        entries.sort(key=lambda entry: (entry[0], entry[1]), reverse=True)
        return [row for _, _, row in entries[:limit]]

    def purge_decisions(self, before_ms: int, limit: int) -> int:
        require_positive(limit, "limit")
        with self._lock:
            old = sorted((entry for entries in self._decisions.values() for entry in entries
                          if entry[0] < before_ms), key=lambda entry: (entry[0], entry[1]))
            doomed = {entry[1] for entry in old[:limit]}
            for customer_id, entries in list(self._decisions.items()):
                kept = [entry for entry in entries if entry[1] not in doomed]
                if kept:
                    self._decisions[customer_id] = kept
                else:
                    del self._decisions[customer_id]
            return len(doomed)

    def purge_treatments(self, before_ms: int, limit: int) -> int:
        require_positive(limit, "limit")
        with self._lock:
            old = sorted((row for key, row in self._treatments.items()
                          if row.decided_at_ms < before_ms
                          and self._outbox[key].status != "pending"),
                         key=lambda row: row.decided_at_ms)[:limit]
            for row in old:
                del self._treatments[row.idempotency_key], self._outbox[row.idempotency_key]
            return len(old)

    # -- dead letters -----------------------------------------------------------------------
    def dead_letter(self, rows: Sequence[DeadLetterRow]) -> None:
        with self._lock:
            self._dead_letters.extend(rows)

    def read_dead_letters(self, limit: int) -> list[DeadLetterRow]:
        require_positive(limit, "limit")
        with self._lock:
            return self._dead_letters[::-1][:limit]

    def purge_dead_letters(self, before_ms: int, limit: int) -> int:
        require_positive(limit, "limit")
        with self._lock:
            old = sorted((i for i, row in enumerate(self._dead_letters) if row.at_ms < before_ms),
                         key=lambda i: self._dead_letters[i].at_ms)[:limit]
            doomed = set(old)
            self._dead_letters = [row for i, row in enumerate(self._dead_letters)
                                  if i not in doomed]
            return len(doomed)

    def dead_letter_count(self) -> int:
        with self._lock:
            return len(self._dead_letters)

    # -- propensity models ------------------------------------------------------------------
    def save_model(self, name: str, data: bytes) -> None:
        with self._lock:
            self._models[name] = bytes(data)

    def load_model(self, name: str) -> bytes | None:
        with self._lock:
            return self._models.get(name)


def _timer_order(row: TimerRow) -> tuple[int, str, str]:
    return (row.due_ms, row.customer_id, row.timer_id)
