"""The JSONL channel: one line per treatment, readable while shards still append to it."""

from __future__ import annotations

from pathlib import Path

import pytest

from shush.adapters.channels import jsonl
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


def _treatment(key: str) -> Treatment:
    return Treatment(treatment_id=f"t-{key}", idempotency_key=key, customer_id="c1",
                     action_id="a", channel="email", decided_at_ms=7, payload={})


def test_delivered_finds_the_keys_in_the_file_written_by_any_process(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "t.jsonl"
    mine, other = JsonlChannel(path), JsonlChannel(path)  # two shards share the file
    mine.send(_treatment('c1|a|m@e1'))
    other.send(_treatment('c2|a|m@"quoted"'))  # a key JSON escapes is found escaped
    assert mine.delivered({'c1|a|m@e1', 'c2|a|m@"quoted"', "c1|a|m@e2", "c1|a"}) == {
        'c1|a|m@e1', 'c2|a|m@"quoted"'}  # a key's prefix is not the key
    assert mine.delivered(set()) == set()
    monkeypatch.setattr(jsonl, "DELIVERED_TAIL_BYTES", len(path.read_bytes()) // 2)
    assert mine.delivered({"c1|a|m@e1"}) == set()  # older than the tail it reads
    mine.close()
    other.close()
