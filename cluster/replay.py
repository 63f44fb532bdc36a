"""``shush replay``: play a JSONL/CSV event log through the engine with time following the
events, as fast as possible or at a speed factor; rejected rows are reported, not fatal."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
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


def replay_in_engine(path: Path, catalog_paths: Sequence[str], data_dir: Path, *,
                     speed: float | None = None, namespace: str = "shush-replay"
                     ) -> tuple[ReplayReport, list[dict[str, Any]]]:
    """Start an engine on a fresh store in ``data_dir`` whose clock follows the events, play
    the file through it, stop it; return the report and the treatments it decided.

    Treatments go to a JSONL file in ``data_dir``: nothing reaches a real channel. P is the
    posterior mean (no Thompson draws) so that two replays differ only by what was changed.
    """
    from ..adapters.channels.jsonl import read_jsonl
    from .config_loader import load_config, load_engine_catalog
    from .engine import Engine

    channel = data_dir / "treatments.jsonl"
    channel.unlink(missing_ok=True)
    (data_dir / "shush.db").unlink(missing_ok=True)
    overrides: dict[str, Any] = {"catalog_paths": list(catalog_paths)} if catalog_paths else {}
    config = load_config(data_dir=str(data_dir), channel={"path": str(channel)},
                         grpc={"port": 0}, clock="event", namespace=namespace,
                         arbitration={"explore": False}, **overrides)
    engine = Engine.start(config)
    engine.serve_grpc()
    try:
        report = replay_file(engine.target, path, load_engine_catalog(config), speed=speed)
        time.sleep(0.5)
    finally:
        engine.stop()
    return report, read_jsonl(channel)


@dataclass(frozen=True, slots=True)
class WhatIf:
    """How the treatments of a changed catalog or policy differ from the baseline's."""

    per_action: list[tuple[str, int, int]]  # action, baseline count, what-if count
    customers_changed: int  # customers whose set of (action, moment) treatments differs
    customers: int


def compare_treatments(baseline: Sequence[dict[str, Any]],
                       changed: Sequence[dict[str, Any]]) -> WhatIf:
    def per_customer(ts: Sequence[dict[str, Any]]) -> dict[str, set[tuple[str, str]]]:
        out: dict[str, set[tuple[str, str]]] = {}
        for t in ts:
            out.setdefault(t["customer_id"], set()).add(
                (t["action_id"], str(t["payload"].get("moment_id"))))
        return out

    base, new = per_customer(baseline), per_customer(changed)
    actions = sorted({t["action_id"] for t in [*baseline, *changed]})
    counts = [(a, sum(t["action_id"] == a for t in baseline),
               sum(t["action_id"] == a for t in changed)) for a in actions]
    everyone = set(base) | set(new)
    differ = sum(base.get(c, set()) != new.get(c, set()) for c in everyone)
    return WhatIf(counts, differ, len(everyone))
