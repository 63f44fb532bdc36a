"""``shush replay``: play a JSONL/CSV event log through the engine with time following the
events, as fast as possible or at a speed factor; rejected rows are reported, not fatal."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..adapters.client import ShushClient
from ..engine.catalog import Catalog
from ..engine.replay import ReplayEvent, ReplayPacer, ReplayRejection, read_events


@dataclass(slots=True)
class ReplayReport:
    events: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: list[str] = field(default_factory=list)
    first_ms: int | None = None
    last_ms: int | None = None
    wall_s: float = 0.0


def _batches(items: Iterator[Any], size: int, pacer: ReplayPacer,
             report: ReplayReport) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    previous: int | None = None
    for item in items:
        if isinstance(item, ReplayRejection):
            report.rejected.append(str(item))
            continue
        assert isinstance(item, ReplayEvent)
        delay = pacer.delay_s(previous, item.occurred_at_ms)
        if delay > 0 and batch:
            yield batch
            batch = []
        if delay > 0:
            time.sleep(delay)
        previous = item.occurred_at_ms
        report.first_ms = report.first_ms or item.occurred_at_ms
        report.last_ms = item.occurred_at_ms
        event_id, customer_id, type_, at_ms, source, attributes = item.event
        batch.append({"event_id": event_id, "customer_id": customer_id, "type": type_,
                      "occurred_at_ms": at_ms, "source": source, "attributes": attributes})
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def replay_file(target: str, path: Path, catalog: Catalog, *, speed: float | None = None,
                fmt: Literal["jsonl", "csv"] | None = None, batch_size: int = 1000
                ) -> ReplayReport:
    """Send the file's events in event-time order (the engine must run with clock: event)."""
    fmt = fmt or ("csv" if path.suffix.lower() == ".csv" else "jsonl")
    report = ReplayReport()
    started = time.perf_counter()
    with path.open() as lines, ShushClient(target, batch_size=batch_size) as client:
        items = read_events(lines, catalog.signals, fmt=fmt)
        for batch in _batches(iter(items), batch_size, ReplayPacer(speed), report):
            result = client.submit(batch)
            report.events += len(batch)
            report.accepted += result.accepted
            report.duplicates += result.duplicates
            report.rejected.extend(f"{r.event_id}: {r.field}: {r.reason}"
                                   for r in result.rejected)
    report.wall_s = time.perf_counter() - started
    return report
