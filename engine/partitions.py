"""Stable customer → partition → shard mapping.

Customers hash to a fixed number of logical partitions; a table maps partitions to shard
indexes. Adding shards moves partitions, never rehashes customers (DESIGN.md).
"""

from __future__ import annotations

from collections.abc import Sequence

from .stable_hash import digest8

# Customers whose partition a table remembers (about 5 MB when full; then it starts over)
PARTITIONS_KEPT = 1 << 16


def partition_of(customer_id: str, num_partitions: int) -> int:
    """A stable hash (BLAKE2b, not Python's salted ``hash``) of the id, modulo the partitions
    (``PartitionTable.partition`` remembers it)."""
    return int.from_bytes(digest8(customer_id), "little") % num_partitions


class PartitionTable:
    """Which shard owns each partition; versioned so that caches can tell they are stale."""

    __slots__ = ("_known", "num_partitions", "owners", "version")

    def __init__(self, owners: Sequence[int], version: int = 1) -> None:
        if not owners:
            raise ValueError("a partition table needs at least one partition")
        self.owners = list(owners)
        self.num_partitions = len(self.owners)
        self.version = version
        self._known: dict[str, int] = {}  # customer id -> partition

    @classmethod
    def round_robin(cls, num_partitions: int, num_shards: int) -> PartitionTable:
        if num_shards < 1:
            raise ValueError("num_shards must be >= 1")
        return cls([p % num_shards for p in range(num_partitions)])

    def partition(self, customer_id: str) -> int:
        """``partition_of``, remembered for the last ``PARTITIONS_KEPT`` customers: an
        event's customer is looked up by the router, then by the shard for its journal and
        its snapshot turn. A hit is one dict lookup (a functools.lru_cache hit, with its key
        tuple and recency list, cost twice as much: shard_of was 13 % of a router's CPU)."""
        known = self._known
        partition = known.get(customer_id)
        if partition is None:
            if len(known) >= PARTITIONS_KEPT:
                known.clear()
            partition = known[customer_id] = partition_of(customer_id, self.num_partitions)
        return partition

    def shard_of(self, customer_id: str) -> int:
        return self.owners[self.partition(customer_id)]

    def partitions_of(self, shard: int) -> list[int]:
        return [p for p, owner in enumerate(self.owners) if owner == shard]

    def to_wire(self) -> dict[str, object]:
        return {"owners": self.owners, "version": self.version}

    @classmethod
    def from_wire(cls, data: dict[str, object]) -> PartitionTable:
        owners = data["owners"]
        version = data["version"]
        assert isinstance(owners, list) and isinstance(version, int)
        return cls(owners, version)
