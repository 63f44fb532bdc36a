"""The per-shard timer heap: which customers have a timer due, without scanning them all.

Each customer exposes its earliest due time (``CustomerState.next_due_ms()``); the shard keeps
one entry per customer here. Re-scheduling a customer leaves its old heap entry behind (lazy
deletion): stale entries are skipped when popped, and the heap is rebuilt when they outnumber
the live ones, so memory stays proportional to the customers with timers.

Usage in a shard (all times are engine-clock ms)::

    wheel.schedule(customer_id, customer.next_due_ms())   # after apply / on_time / load
    for customer_id in wheel.pop_due(now_ms):
        moments = customers[customer_id].on_time(now_ms, catalog)
        wheel.schedule(customer_id, customers[customer_id].next_due_ms())
"""

from __future__ import annotations

import heapq


class TimerWheel:
    __slots__ = ("_due", "_heap")

    def __init__(self) -> None:
        self._heap: list[tuple[int, str]] = []
        self._due: dict[str, int] = {}

    def __len__(self) -> int:
        """Customers with a timer."""
        return len(self._due)

    def __contains__(self, customer_id: object) -> bool:
        return customer_id in self._due

    def due_ms(self, customer_id: str) -> int | None:
        return self._due.get(customer_id)

    def schedule(self, customer_id: str, due_ms: int | None) -> None:
        """Set (or, with ``None``, cancel) the customer's next due time."""
        if due_ms is None:
            self._due.pop(customer_id, None)
            return
        if self._due.get(customer_id) == due_ms:
            return
        self._due[customer_id] = due_ms
        heapq.heappush(self._heap, (due_ms, customer_id))
        if len(self._heap) > 64 and len(self._heap) > 2 * len(self._due):
            self._heap = [(due, cid) for cid, due in self._due.items()]
            heapq.heapify(self._heap)

    def cancel(self, customer_id: str) -> None:
        self._due.pop(customer_id, None)

    def next_due_ms(self) -> int | None:
        """The earliest due time of any customer (drops stale entries on the way)."""
        heap = self._heap
        while heap and self._due.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def pop_due(self, now_ms: int, limit: int | None = None) -> list[str]:
        """Customers due at ``now_ms`` (earliest first), removed: reschedule them after.

        ``limit`` bounds one tick's work; the rest stay due for the next call.
        """
        out: list[str] = []
        heap = self._heap
        while heap and heap[0][0] <= now_ms and (limit is None or len(out) < limit):
            due, customer_id = heapq.heappop(heap)
            if self._due.get(customer_id) == due:
                del self._due[customer_id]
                out.append(customer_id)
        return out
