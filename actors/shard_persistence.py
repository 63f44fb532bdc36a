"""How a shard keeps its customers: write-ahead journal, snapshots, recovery, fencing.

- On start the shard acquires its partitions (a new epoch: an older incarnation still running
  is fenced off), loads its customers' snapshots and replays the journal written since.
- Each batch's events are journaled (one transaction for all the batch's partitions) before
  they are applied and acknowledged: an acknowledged event is never lost.
- Every ``snapshot_interval_s`` the customers changed since the last snapshot are saved, and
  the journal they cover is truncated in the same transaction.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import msgpack

from ..engine.customer import CustomerState
from ..engine.partitions import PartitionTable, partition_of
from ..engine.store import SnapshotRow, StateStore

log = logging.getLogger(__name__)


def _pack(data: Any) -> bytes:
    packed: bytes = msgpack.packb(data, use_bin_type=True)
    return packed


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


class ShardPersistence:
    def __init__(self, store: StateStore, shard_index: int, table: PartitionTable,
                 snapshot_interval_s: float) -> None:
        self.store = store
        self.num_partitions = table.num_partitions
        self.partitions = table.partitions_of(shard_index)
        self.owner = f"shard-{shard_index}-{uuid.uuid4().hex[:8]}"
        epoch = store.acquire_partitions(self.partitions, self.owner)
        self.epochs = {p: epoch for p in self.partitions}
        self.snapshot_interval_s = snapshot_interval_s
        self.dirty: set[str] = set()
        self._journaled: dict[int, int] = {}  # partition -> last seq not yet covered
        self._last_snapshot = time.monotonic()
        self.stats = {"snapshots": 0, "snapshot_rows": 0, "journaled": 0, "replayed": 0}

    def partition(self, customer_id: str) -> int:
        return partition_of(customer_id, self.num_partitions)

    # -- recovery -------------------------------------------------------------------------
    def load_customers(self) -> Iterator[CustomerState]:
        for row in self.store.load_snapshots(self.partitions):
            yield CustomerState.from_snapshot(_unpack(row.data))

    def load_customer(self, customer_id: str) -> CustomerState | None:
        """Activate one passivated customer from its snapshot."""
        row = self.store.load_snapshot(customer_id)
        return None if row is None else CustomerState.from_snapshot(_unpack(row.data))

    def journaled_events(self) -> Iterator[list[Any]]:
        """Events journaled since the last snapshot, partition by partition, in order."""
        for partition in self.partitions:
            for entry in self.store.read_journal(partition):
                self._journaled[partition] = entry.seq
                for event in _unpack(entry.data):
                    self.stats["replayed"] += 1
                    yield event

    # -- the write path -------------------------------------------------------------------
    def journal(self, events: Iterable[list[Any]]) -> None:
        by_partition: dict[int, list[list[Any]]] = {}
        for event in events:
            by_partition.setdefault(self.partition(event[1]), []).append(event)
        if not by_partition:
            return
        assigned = self.store.append_journals(
            {p: self.epochs[p] for p in by_partition},
            {p: [_pack(batch)] for p, batch in by_partition.items()})
        for partition, seqs in assigned.items():
            self._journaled[partition] = seqs[-1]
            self.stats["journaled"] += len(by_partition[partition])

    def touched(self, customer_ids: Iterable[str]) -> None:
        self.dirty.update(customer_ids)

    def snapshot_due(self) -> bool:
        return bool(self.dirty) and (
            time.monotonic() - self._last_snapshot >= self.snapshot_interval_s)

    def snapshot(self, customer: Callable[[str], CustomerState | None], now_ms: int) -> int:
        """Save every changed customer and truncate the journal they cover, atomically."""
        rows = []
        for customer_id in self.dirty:
            state = customer(customer_id)
            if state is not None:
                rows.append(SnapshotRow(customer_id, self.partition(customer_id),
                                        _pack(state.to_snapshot()), now_ms))
        truncate = dict(self._journaled)
        if rows or truncate:
            self.store.save_snapshots(self.epochs, rows, truncate_journal_to=truncate)
        self.dirty.clear()
        self._journaled.clear()
        self._last_snapshot = time.monotonic()
        self.stats["snapshots"] += 1
        self.stats["snapshot_rows"] += len(rows)
        return len(rows)
