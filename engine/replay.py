"""Replay parsing: a JSONL or CSV event log -> wire events in event-time order, streaming.

Pure: the caller opens the file and passes its lines (``shush replay FILE`` in ``cluster/``).
Each record has ``event_id``, ``customer_id``, ``type``, ``occurred_at`` (ISO-8601, naive = UTC,
or epoch ms), ``source`` and ``attributes``: a JSON object in JSONL; in CSV a JSON
``attributes`` column and/or one column per attribute, typed against the catalog's attribute
schema (``number``, ``integer``, ``boolean``: true/false/1/0/yes/no, ``string``,
``timestamp``: ms or ISO text). An empty cell is an absent attribute; a column that is no
attribute of the row's type must be empty (a wide CSV can carry several types' columns).
A missing ``event_id`` becomes ``<id_prefix>-<line>``, so replaying a file twice is idempotent.

Nothing raises for a bad row: it is yielded as a ``ReplayRejection`` naming the line, the
field and the reason, and the replay continues. ``in_event_time_order`` sorts the stream: all
of it (``reorder_window_ms=None``, memory grows with the file), or within a bounded window
(an event older than what was already emitted is rejected). ``ReplayPacer`` turns event-time
gaps into wall-clock sleeps for a speed factor.
"""

from __future__ import annotations

import csv
import heapq
import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from .catalog import SignalType
from .errors import EventRejected
from .signals import SignalSchema, signal_schemas, validate_wire_event

__all__ = [
    "ReplayEvent", "ReplayPacer", "ReplayRejection", "in_event_time_order", "parse_time_ms",
    "read_csv", "read_events", "read_jsonl",
]

STANDARD_COLUMNS = ("event_id", "customer_id", "type", "occurred_at", "source", "attributes")
_TRUE, _FALSE = frozenset({"true", "1", "yes", "y"}), frozenset({"false", "0", "no", "n"})


@dataclass(frozen=True, slots=True)
class ReplayEvent:
    line: int
    event: list[Any]  # [event_id, customer_id, type, occurred_at_ms, source, attributes]

    @property
    def occurred_at_ms(self) -> int:
        at: int = self.event[3]
        return at


@dataclass(frozen=True, slots=True)
class ReplayRejection:
    line: int
    field: str
    reason: str
    text: str = ""  # the raw row, shortened

    def __str__(self) -> str:
        return f"line {self.line}, field {self.field or '-'}: {self.reason}"


ReplayItem = ReplayEvent | ReplayRejection


class _Bad(Exception):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field, self.reason = field, reason


def parse_time_ms(value: Any) -> int:
    """Epoch ms from an int, a digit string or ISO-8601 text (naive = UTC); ValueError else."""
    if isinstance(value, bool):
        raise ValueError("a time, not a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return int(text)
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{value!r} is neither ISO-8601 nor epoch ms") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return int(moment.timestamp() * 1000)
    raise ValueError(f"expected ISO-8601 text or epoch ms, got {type(value).__name__}")


def _typed(text: str, kind: str) -> Any:
    if kind == "number":
        number = float(text)
        if not math.isfinite(number):
            raise ValueError(f"{text!r} is not a finite number")
        return number
    if kind == "integer":
        return int(text)
    if kind == "boolean":
        low = text.lower()
        if low in _TRUE or low in _FALSE:
            return low in _TRUE
        raise ValueError(f"{text!r} is not a boolean (true/false/1/0/yes/no)")
    if kind == "timestamp":
        return int(text) if text.lstrip("-").isdigit() else text
    return text


def _record(raw: Mapping[str, Any], line: int, signals: Mapping[str, SignalType],
            schemas: Mapping[str, SignalSchema], id_prefix: str,
            extra: Mapping[str, str] | None = None) -> list[Any]:
    """Build and validate one wire event; raise ``_Bad`` naming the field."""
    type_ = raw.get("type")
    if not isinstance(type_, str) or not type_:
        raise _Bad("type", "missing signal type")
    spec = signals.get(type_)
    if spec is None:
        raise _Bad("type", f"unknown signal type {type_!r}")
    if raw.get("occurred_at") in (None, ""):
        raise _Bad("occurred_at", "missing event time")
    try:
        at_ms = parse_time_ms(raw["occurred_at"])
    except ValueError as exc:
        raise _Bad("occurred_at", str(exc)) from None
    attributes = raw.get("attributes") or {}
    if isinstance(attributes, str):
        try:
            attributes = json.loads(attributes)
        except json.JSONDecodeError as exc:
            raise _Bad("attributes", f"not a JSON object: {exc.msg}") from None
    if not isinstance(attributes, dict):
        raise _Bad("attributes", "attributes must be a JSON object")
    attributes = dict(attributes)
    for name, text in (extra or {}).items():
        if text is None or text.strip() == "":
            continue
        attr = spec.attributes.get(name)
        if attr is None:
            raise _Bad(name, f"column {name!r} is not an attribute of {type_!r}")
        try:
            attributes[name] = _typed(text.strip(), attr.type)
        except ValueError as exc:
            raise _Bad(f"attributes.{name}", f"{attr.type} expected: {exc}") from None
    event_id = raw.get("event_id") or f"{id_prefix}-{line}"
    event = [event_id, raw.get("customer_id"), type_, at_ms, raw.get("source") or "replay",
             attributes]
    try:
        validate_wire_event(event, schemas)
    except EventRejected as exc:
        raise _Bad(exc.field, exc.reason) from None
    return event


def read_jsonl(lines: Iterable[str], signals: Mapping[str, SignalType], *,
               id_prefix: str = "replay") -> Iterator[ReplayItem]:
    """One JSON object per line, in file order (blank lines are skipped)."""
    schemas = signal_schemas(signals)
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            raw = json.loads(text)
            if not isinstance(raw, dict):
                raise _Bad("", "a line must hold one JSON object")
            yield ReplayEvent(number, _record(raw, number, signals, schemas, id_prefix))
        except json.JSONDecodeError as exc:
            yield ReplayRejection(number, "", f"not JSON: {exc.msg} at column {exc.colno}",
                                  text[:200])
        except _Bad as bad:
            yield ReplayRejection(number, bad.field, bad.reason, text[:200])


def read_csv(lines: Iterable[str], signals: Mapping[str, SignalType], *,
             id_prefix: str = "replay") -> Iterator[ReplayItem]:
    """A CSV with a header row, in file order (see the module doc for columns)."""
    reader = csv.DictReader(iter(lines))
    header = reader.fieldnames or []
    missing = [c for c in ("customer_id", "type", "occurred_at") if c not in header]
    if missing:
        yield ReplayRejection(1, missing[0], f"the header lacks column(s) {', '.join(missing)}")
        return
    extra_columns = [c for c in header if c not in STANDARD_COLUMNS]
    schemas = signal_schemas(signals)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield ReplayRejection(reader.line_num, "", f"bad CSV: {exc}")
            continue
        number = reader.line_num
        if None in row:
            yield ReplayRejection(number, "", f"more cells than the {len(header)} header columns")
            continue
        extra = {c: row[c] for c in extra_columns if row.get(c) is not None}
        try:
            yield ReplayEvent(number, _record(row, number, signals, schemas, id_prefix, extra))
        except _Bad as bad:
            yield ReplayRejection(number, bad.field, bad.reason, ",".join(
                str(v) for v in row.values())[:200])


def in_event_time_order(items: Iterable[ReplayItem], *,
                        reorder_window_ms: int | None = None) -> Iterator[ReplayItem]:
    """Events by event time (ties in file order); rejections pass straight through."""
    heap: list[tuple[int, int, ReplayEvent]] = []
    newest, emitted = None, None
    for item in items:
        if isinstance(item, ReplayRejection):
            yield item
            continue
        at = item.occurred_at_ms
        if emitted is not None and at < emitted:
            yield ReplayRejection(item.line, "occurred_at", f"{emitted - at} ms earlier than "
                                  f"events already replayed (reorder window "
                                  f"{reorder_window_ms} ms)")
            continue
        heapq.heappush(heap, (at, item.line, item))
        newest = at if newest is None else max(newest, at)
        if reorder_window_ms is not None:
            while heap and heap[0][0] <= newest - reorder_window_ms:
                emitted = heap[0][0]
                yield heapq.heappop(heap)[2]
    while heap:
        yield heapq.heappop(heap)[2]


def read_events(lines: Iterable[str], signals: Mapping[str, SignalType], *,
                fmt: Literal["jsonl", "csv"] = "jsonl", reorder_window_ms: int | None = None,
                id_prefix: str = "replay") -> Iterator[ReplayItem]:
    """``read_jsonl``/``read_csv`` then ``in_event_time_order``."""
    reader = read_jsonl if fmt == "jsonl" else read_csv
    return in_event_time_order(reader(lines, signals, id_prefix=id_prefix),
                               reorder_window_ms=reorder_window_ms)


class ReplayPacer:
    """Wall-clock pacing: ``speed`` event-seconds per wall second; None = as fast as possible."""

    def __init__(self, speed: float | None = None) -> None:
        if speed is not None and speed <= 0:
            raise ValueError("speed must be positive (or None for as fast as possible)")
        self.speed = speed

    def delay_s(self, previous_ms: int | None, next_ms: int) -> float:
        if self.speed is None or previous_ms is None or next_ms <= previous_ms:
            return 0.0
        return (next_ms - previous_ms) / 1000 / self.speed
