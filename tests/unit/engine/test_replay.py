"""Replay parsing: JSONL and CSV logs to wire events by event time; bad rows as rejections."""

from __future__ import annotations

import json

import pytest

from shush.engine.catalog import bundled_catalog_path, load_catalog
from shush.engine.replay import (
    ReplayEvent,
    ReplayPacer,
    ReplayRejection,
    in_event_time_order,
    parse_time_ms,
    read_csv,
    read_events,
    read_jsonl,
)

SIGNALS = load_catalog([bundled_catalog_path("bank")]).signals
T0 = 1_750_000_000_000


def jsonl(*rows: object) -> list[str]:
    return [row if isinstance(row, str) else json.dumps(row) for row in rows]


def test_parse_time_ms() -> None:
    assert parse_time_ms(T0) == T0 and parse_time_ms(str(T0)) == T0
    assert parse_time_ms("2025-06-15T15:06:40Z") == T0
    assert parse_time_ms("2025-06-15T17:06:40+02:00") == T0
    assert parse_time_ms("2025-06-15T15:06:40") == T0  # naive = UTC
    for bad in ("yesterday", True, None, 1.5):
        with pytest.raises(ValueError):
            parse_time_ms(bad)


def test_jsonl_yields_typed_wire_events_sorted_by_event_time() -> None:
    lines = jsonl(
        {"event_id": "e2", "customer_id": "a", "type": "deposit",
         "occurred_at": "2025-06-15T15:06:41Z", "attributes": {"amount": 10}},
        "",
        {"customer_id": "a", "type": "deposit", "occurred_at": T0, "source": "core",
         "attributes": {"amount": 5.5, "kind": "cash"}},
    )
    items = list(read_events(lines, SIGNALS))
    assert all(isinstance(i, ReplayEvent) for i in items)
    assert [i.event for i in items if isinstance(i, ReplayEvent)] == [
        ["replay-3", "a", "deposit", T0, "core", {"amount": 5.5, "kind": "cash"}],
        ["e2", "a", "deposit", T0 + 1000, "replay", {"amount": 10}],
    ]


def test_bad_jsonl_rows_are_rejected_with_line_and_field_and_the_replay_goes_on() -> None:
    good = {"customer_id": "a", "type": "deposit", "occurred_at": T0,
            "attributes": {"amount": 1.0}}
    lines = jsonl(
        good,
        "{not json",
        {**good, "type": "teleport"},
        {**good, "occurred_at": "next tuesday"},
        {**good, "attributes": {"amount": "lots"}},
        {**good, "attributes": {}},
        {**good, "attributes": {"colour": "red"}},
        {**good, "customer_id": ""},
        "[1, 2]",
        good,
    )
    items = list(read_jsonl(lines, SIGNALS))
    rejected = {i.line: i.field for i in items if isinstance(i, ReplayRejection)}
    assert rejected == {2: "", 3: "type", 4: "occurred_at", 5: "attributes.amount",
                        6: "attributes.amount", 7: "attributes.colour", 8: "customer_id",
                        9: ""}
    assert [i.line for i in items if isinstance(i, ReplayEvent)] == [1, 10]
    assert "line 4, field occurred_at" in str(items[3])


def test_csv_typed_against_the_attribute_schema() -> None:
    lines = [
        "event_id,customer_id,type,occurred_at,source,amount,kind,balance,attributes\n",
        f"e1,a,deposit,{T0},core,12.5,cash,,\n",
        f"e2,a,balance_update,{T0 - 5},core,,,300,\n",
        f'e3,b,deposit,{T0},core,,,,"{{""amount"": 3}}"\n',
        f"e4,b,deposit,{T0},core,abc,,,\n",
        f"e5,b,deposit,{T0},core,1,,300,\n",
        f"e6,b,deposit,{T0},core,1,,,,extra\n",
    ]
    items = list(read_csv(lines, SIGNALS))
    events = {i.event[0]: i.event for i in items if isinstance(i, ReplayEvent)}
    assert events["e1"][5] == {"amount": 12.5, "kind": "cash"}
    assert events["e2"][5] == {"balance": 300.0}
    assert events["e3"][5] == {"amount": 3}
    rejected = {i.line: (i.field, i.reason) for i in items if isinstance(i, ReplayRejection)}
    assert rejected[5][0] == "attributes.amount" and "number expected" in rejected[5][1]
    assert rejected[6][0] == "balance" and "not an attribute of 'deposit'" in rejected[6][1]
    assert "more cells" in rejected[7][1]


def test_csv_integer_and_boolean_cells() -> None:
    from shush.engine.catalog import AttributeSpec, SignalType

    signals = {"visit": SignalType(type="visit", category="behavior-person", source="web",
                                   attributes={"pages": AttributeSpec(type="integer"),
                                               "mobile": AttributeSpec(type="boolean")})}
    lines = ["customer_id,type,occurred_at,pages,mobile\n", f"a,visit,{T0},3,yes\n",
             f"a,visit,{T0},3.5,no\n", f"a,visit,{T0},3,maybe\n"]
    items = list(read_csv(lines, signals))
    assert isinstance(items[0], ReplayEvent) and items[0].event[5] == {"pages": 3,
                                                                       "mobile": True}
    assert [(i.line, i.field) for i in items[1:] if isinstance(i, ReplayRejection)] == [
        (3, "attributes.pages"), (4, "attributes.mobile")]


def test_csv_without_required_columns_is_one_rejection() -> None:
    items = list(read_csv(["customer_id,kind\n", "a,x\n"], SIGNALS))
    assert len(items) == 1 and isinstance(items[0], ReplayRejection)
    assert items[0].field == "type"


def test_reorder_window_streams_and_rejects_what_is_too_late() -> None:
    def event(line: int, at: int) -> ReplayEvent:
        return ReplayEvent(line, [f"e{line}", "a", "deposit", at, "", {"amount": 1}])

    stream = [event(1, 100), event(2, 50), event(3, 1000), event(4, 10), event(5, 990)]
    windowed = list(in_event_time_order(iter(stream), reorder_window_ms=100))
    assert [(type(i).__name__, i.line) for i in windowed] == [
        ("ReplayEvent", 2), ("ReplayEvent", 1), ("ReplayRejection", 4),
        ("ReplayEvent", 5), ("ReplayEvent", 3)]
    full = list(in_event_time_order(stream))
    assert [i.line for i in full] == [4, 2, 1, 5, 3]


def test_pacer() -> None:
    assert ReplayPacer().delay_s(0, 60_000) == 0.0
    assert ReplayPacer(speed=60).delay_s(0, 60_000) == 1.0
    assert ReplayPacer(speed=60).delay_s(None, 60_000) == 0.0
    with pytest.raises(ValueError):
        ReplayPacer(speed=0)
