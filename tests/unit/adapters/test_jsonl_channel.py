"""The JSONL channel: one line per treatment, readable while shards still append to it."""

from __future__ import annotations

from pathlib import Path

from shush.adapters.channels.jsonl import JsonlChannel, read_jsonl
from shush.engine.models import Treatment


def test_each_treatment_is_one_line_of_its_plain_data(tmp_path: Path) -> None:
    channel = JsonlChannel(tmp_path / "t.jsonl")
    treatment = Treatment(treatment_id="t1", idempotency_key="c1|a|m", customer_id="c1",
                          action_id="a", channel="email", decided_at_ms=7,
                          payload={"why": ["a: best — by far"]})
    channel.send(treatment)
    channel.send(treatment)
    channel.close()
    assert read_jsonl(tmp_path / "t.jsonl") == [treatment.to_wire()] * 2


def test_a_line_still_being_written_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"treatment_id":"t1"}\n{"treatment_id":"t')  # a writer mid-line
    assert read_jsonl(path) == [{"treatment_id": "t1"}]
    assert read_jsonl(tmp_path / "missing.jsonl") == []
