"""How a shard keeps its customers: write-ahead journal, snapshots, recovery, fencing.

- On start the shard acquires its partitions (a new epoch: an older incarnation still running
  is fenced off), loads its customers' snapshots and replays the journal written since.
- Each batch's events are journaled, as one entry fenced by the batch's partitions, before
  they are applied and acknowledged: an acknowledged event is never lost.
- Snapshots go partition by partition: a partition's changed customers are saved and its
  journal mark raised to the journal's end, in one transaction (the store deletes the entries
  every partition's mark has passed). The end may be another shard's entry: entries written
  since this shard acquired its partitions hold none of its events, and older ones were
  replayed on start. So an idle shard's marks keep up, and never hold a busy shard's entries.
  Each partition has its turn once per ``snapshot_interval_s``, or sooner: once per
  ``max_replay_events`` events journaled by the shard, so that a restart replays at most about
  that many. The turns are spread evenly, so the work comes in small steps instead of one stall
  that holds up every call to the shard. Snapshots cost most when customers rarely repeat (a
  customer changed several times between its turns is saved once), and a crash is rare: the
  cadence follows what a restart may replay, not a fixed period.
- One entry per batch, not one per partition the batch touches: at 125 events a batch
  touched ~110 of a shard's 512 partitions, and writing their entries was a fifth of the
  shard's work.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import msgpack

from ..engine.customer import CustomerState
from ..engine.packing import packb
from ..engine.partitions import PartitionTable
from ..engine.store import SnapshotRow, StateStore

log = logging.getLogger(__name__)


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


@dataclass(slots=True)
class SnapshotStep:
    """A snapshot taken and not yet written (``ShardPersistence.take_snapshot``)."""

    partitions: list[int]
    epochs: dict[int, int]  # the fence: these partitions' epochs
    rows: list[SnapshotRow]  # packed so far
    covered_to: int  # the journal's end when taken: every entry up to it was applied
    taken: dict[int, set[str]]  # the dirty customers it saves, given back if it fails
    pending: list[tuple[int, str]]  # (partition, customer) still to pack
    marks_behind: bool  # some partition's journal mark is below ``covered_to``

    @property
    def needed(self) -> bool:
        """Rows to save, or marks to raise."""
        return bool(self.rows) or self.marks_behind


class ShardPersistence:
    def __init__(self, store: StateStore, shard_index: int, table: PartitionTable,
                 snapshot_interval_s: float, max_replay_events: int | None = None) -> None:
        self.store = store
        self.partition = table.partition  # customer id -> partition (remembered)
        self.partitions = table.partitions_of(shard_index)
        self.owner = f"shard-{shard_index}-{uuid.uuid4().hex[:8]}"
        epoch = store.acquire_partitions(self.partitions, self.owner)
        self.epochs = {p: epoch for p in self.partitions}
        self.snapshot_interval_s = snapshot_interval_s
        self.max_replay_events = max_replay_events  # None: the interval alone
        self._events_since = 0  # events journaled since the last ``due_partitions``
        # events of each partition journaled since its mark: what a restart would replay
        self._unsaved: dict[int, int] = {}
        self.unsaved_events = 0  # their sum
        self.dirty: dict[int, set[str]] = {}  # partition -> customers changed since saved
        self._marks = store.journal_marks(self.partitions)  # partition -> journal covered to
        self._end = 0  # the journal's end as last seen: every entry up to it is applied
        self._cursor = 0  # the next partition to have its snapshot turn
        self._turns_owed = 0.0  # partition turns accrued since the last step
        self._last_step = time.monotonic()
        self.stats = {"snapshots": 0, "snapshot_rows": 0, "journaled": 0, "replayed": 0,
                      "catch_ups": 0}

    # -- recovery -------------------------------------------------------------------------
    def load_customers(self) -> Iterator[CustomerState]:
        for row in self.store.load_snapshots(self.partitions):
            yield CustomerState.from_packed(row.data)

    def load_customers_of(self, customer_ids: list[str]) -> list[CustomerState]:
        """Activate passivated customers from their snapshots, in one read."""
        return [CustomerState.from_packed(row.data)
                for row in self.store.load_snapshots_of(customer_ids)]

    def journaled_events(self, page: int = 1000) -> Iterator[list[Any]]:
        """The events of this shard's partitions journaled after their marks, in order."""
        marks = self._marks
        after = min(marks.values(), default=0)
        while True:
            entries = self.store.read_journal(after, limit=page)
            for entry in entries:
                self._end = entry.seq
                for event in _unpack(entry.data):
                    partition = self.partition(event[1])
                    if entry.seq > marks.get(partition, entry.seq):
                        self.stats["replayed"] += 1
                        self._count_unsaved(partition, 1)  # still to be saved once applied
                        yield event
            if len(entries) < page:
                return
            after = entries[-1].seq

    # -- the write path -------------------------------------------------------------------
    def journal(self, events: list[list[Any]], packed: bytes | None = None,
                counts: dict[int, int] | None = None) -> None:
        """One entry for the batch, fenced by the epochs of the partitions it touches;
        ``packed``: ``events`` already packed with msgpack (else they are packed here);
        ``counts``: the events per partition, already counted (else they are counted here:
        a cached partition lookup per event was 2 % of a saturated shard's CPU)."""
        if not events:
            return
        epochs = self.epochs
        if counts is None:
            counts = {}
            partition_of = self.partition
            for event in events:
                partition = partition_of(event[1])
                counts[partition] = counts.get(partition, 0) + 1
        self._end = self.store.append_journal({p: epochs[p] for p in counts},
                                              packb(events) if packed is None else packed)
        self.stats["journaled"] += len(events)
        self._events_since += len(events)
        for partition, count in counts.items():
            self._count_unsaved(partition, count)

    def _count_unsaved(self, partition: int, count: int) -> None:
        self._unsaved[partition] = self._unsaved.get(partition, 0) + count
        self.unsaved_events += count

    def behind(self) -> bool:
        """More events to replay on a restart than ``max_replay_events``: under overload
        snapshot rounds fall behind (each of their steps waits for the batch lock behind the
        queued batches), and the shard catches up before its next batch (``catch_up_step``)."""
        return self.max_replay_events is not None and (
            self.unsaved_events > self.max_replay_events)

    def catch_up_step(self, events: int, *, max_partitions: int) -> list[int]:
        """The partitions with the most events to replay, at most ``max_partitions``, enough
        to take ``events`` off what a restart would replay."""
        step: list[int] = []
        taken = 0
        for partition in sorted(self._unsaved, key=self._unsaved.__getitem__, reverse=True):
            if taken >= events or len(step) >= max_partitions:
                break
            step.append(partition)
            taken += self._unsaved[partition]
        return step

    def touched(self, customer_ids: Iterable[str]) -> None:
        dirty = self.dirty
        for customer_id in customer_ids:
            partition = self.partition(customer_id)
            changed = dirty.get(partition)
            if changed is None:
                dirty[partition] = {customer_id}
            else:
                changed.add(customer_id)

    def touched_customers(self, customers: Iterable[CustomerState]) -> None:
        """``touched`` for customers at hand: each one's partition is hashed once and kept
        on it (``CustomerState.partition``), not again after every turn it takes part in."""
        dirty = self.dirty
        for customer in customers:
            partition = customer.partition
            if partition < 0:
                partition = customer.partition = self.partition(customer.customer_id)
            changed = dirty.get(partition)
            if changed is None:
                dirty[partition] = {customer.customer_id}
            else:
                changed.add(customer.customer_id)

    def unsaved_partitions(self, customer_ids: Iterable[str]) -> set[int]:
        """The partitions in which one of these customers changed since its last snapshot."""
        dirty = self.dirty
        unsaved = set()
        for customer_id in customer_ids:
            partition = self.partition(customer_id)
            if customer_id in dirty.get(partition, ()):
                unsaved.add(partition)
        return unsaved

    def due_partitions(self) -> list[int]:
        """The partitions whose snapshot turn has come since the last call, with something to
        save or truncate: every partition has a turn once per ``snapshot_interval_s``, or
        once per ``max_replay_events`` journaled events when that comes first."""
        if not self.partitions:
            return []
        now = time.monotonic()
        share = (now - self._last_step) / self.snapshot_interval_s  # of a round of turns
        if self.max_replay_events is not None:
            share = max(share, self._events_since / self.max_replay_events)
        self._turns_owed += share * len(self.partitions)
        self._last_step = now
        self._events_since = 0
        count = min(int(self._turns_owed), len(self.partitions))
        self._turns_owed -= count
        if count:
            self._catch_up()
        if count == len(self.partitions):
            self._turns_owed = 0.0  # a long pause: one full round, no backlog of turns
        turn = [self.partitions[(self._cursor + i) % len(self.partitions)]
                for i in range(count)]
        self._cursor = (self._cursor + count) % len(self.partitions)
        return [p for p in turn if p in self.dirty or self._marks[p] < self._end]

    def _catch_up(self) -> None:
        """Other shards' entries move the journal's end too (see the module's docstring)."""
        self._end = max(self._end, self.store.journal_end())

    def steps(self, partitions: list[int], *, max_customers: int,
              max_partitions: int) -> list[list[int]]:
        """``partitions`` in consecutive steps of at most ``max_partitions`` partitions and
        about ``max_customers`` changed customers (a step has at least one partition): each
        step is one write transaction, and the shard answers calls between steps."""
        steps: list[list[int]] = []
        step: list[int] = []
        customers = 0
        for partition in partitions:
            changed = len(self.dirty.get(partition, ()))
            if step and (customers + changed > max_customers or len(step) >= max_partitions):
                steps.append(step)
                step, customers = [], 0
            step.append(partition)
            customers += changed
        if step:
            steps.append(step)
        return steps

    def snapshot(self, customer: Callable[[str], CustomerState | None], now_ms: int,
                 partitions: Iterable[int] | None = None) -> int:
        """Save the changed customers of ``partitions`` (default: all) and raise their
        journal marks to the journal's end, atomically; the number of customers saved."""
        step = self.take_snapshot(partitions)
        self.pack_rows(step, customer, now_ms)
        try:
            self.write_snapshot(step)
        except BaseException:
            self.settle_snapshot(step, saved=False)
            raise
        return self.settle_snapshot(step, saved=True)

    def take_snapshot(self, partitions: Iterable[int] | None = None) -> SnapshotStep:
        """A step for the changed customers of ``partitions`` (default: all), none packed yet.
        They leave the dirty set now: a change made before the step is settled marks its
        customer again."""
        if partitions is None:
            self._catch_up()
        last = self._end
        chosen = ([p for p in self.partitions if p in self.dirty or self._marks[p] < last]
                  if partitions is None else list(partitions))
        taken = {p: self.dirty.pop(p) for p in chosen if p in self.dirty}
        marks = self._marks
        return SnapshotStep(chosen, {p: self.epochs[p] for p in chosen}, [], last, taken,
                            [(p, c) for p, ids in taken.items() for c in ids],
                            marks_behind=any(marks[p] < last for p in chosen))

    @staticmethod
    def pack_rows(step: SnapshotStep, customer: Callable[[str], CustomerState | None],
                  now_ms: int, limit: int | None = None) -> bool:
        """Pack up to ``limit`` (default: all) of the step's customers, each as it is now;
        ``True`` once every one is packed. Between calls the shard may answer other calls:
        a customer is packed whole, in one call."""
        pending = step.pending
        count = len(pending) if limit is None else min(limit, len(pending))
        rows = step.rows
        for partition, customer_id in pending[len(pending) - count:]:
            state = customer(customer_id)
            if state is not None:
                rows.append(SnapshotRow(customer_id, partition, state.pack_snapshot(),
                                        now_ms))
        del pending[len(pending) - count:]
        return not pending

    def write_snapshot(self, step: SnapshotStep) -> None:
        """Save a packed step: one transaction, fenced by the step's partitions only. It
        touches nothing else of this object, so it may run on another thread while the
        shard answers calls; ``settle_snapshot`` follows it on the shard's own."""
        if step.needed:
            self.store.save_snapshots(step.epochs, step.rows,
                                      journal_covered_to=step.covered_to or None)

    def settle_snapshot(self, step: SnapshotStep, *, saved: bool) -> int:
        """After the write: raise the marks of a saved step, or give a failed one's
        customers back to the dirty set. The number of customers saved."""
        if not saved:
            for partition, customer_ids in step.taken.items():
                self.dirty.setdefault(partition, set()).update(customer_ids)
            return 0
        marks = self._marks
        for partition in step.partitions:
            marks[partition] = max(marks[partition], step.covered_to)
            self.unsaved_events -= self._unsaved.pop(partition, 0)
        self.stats["snapshots"] += 1
        self.stats["snapshot_rows"] += len(step.rows)
        return len(step.rows)
