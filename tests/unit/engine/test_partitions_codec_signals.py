from __future__ import annotations

from collections import Counter

import msgpack
import pytest

from shush.engine import codec, partitions
from shush.engine.arbitration import CandidateSet, Verdict
from shush.engine.catalog import Catalog, CatalogFile
from shush.engine.errors import CodecError, EventRejected, WrongShard
from shush.engine.models import Candidate
from shush.engine.partitions import PartitionTable, partition_of
from shush.engine.signals import SignalSchema, admit_events, validate_wire_event
from tests.factories import COMPETING_CATALOG, event


def test_partition_hash_is_pinned() -> None:
    # A change of hash would move every customer to another shard: these values must not move.
    assert [partition_of(name, 1024) for name in ("alice", "bob", "customer-1")] == [
        589, 884, 244]
    assert partition_of("alice", 7) == 0


def test_partitions_spread_customers_evenly_over_shards() -> None:
    table = PartitionTable.round_robin(1024, 4)
    counts = Counter(table.shard_of(f"customer-{i}") for i in range(40_000))
    assert set(counts) == {0, 1, 2, 3}
    assert max(counts.values()) / min(counts.values()) < 1.1


def test_moving_a_partition_moves_only_its_customers() -> None:
    table = PartitionTable.round_robin(64, 2)
    before = {f"c{i}": table.shard_of(f"c{i}") for i in range(2000)}
    moved_partition = 5
    table.owners[moved_partition] = 2
    for customer, shard in before.items():
        if partition_of(customer, 64) == moved_partition:
            assert table.shard_of(customer) == 2
        else:
            assert table.shard_of(customer) == shard


def test_a_table_remembers_partitions_up_to_a_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(partitions, "PARTITIONS_KEPT", 50)
    table = PartitionTable.round_robin(64, 3)
    ids = [f"customer-{i}" for i in range(200)]
    for _ in range(2):  # the second pass after the table started over, more than once
        assert [table.partition(c) for c in ids] == [partition_of(c, 64) for c in ids]
        assert [table.shard_of(c) for c in ids] == [partition_of(c, 64) % 3 for c in ids]
        assert len(table._known) <= 50


def test_codec_round_trip_and_version_checks() -> None:
    events = [event("a", "savings_withdrawal", amount=1.0)]
    assert codec.unpack(codec.pack(codec.EVENTS, events), codec.EVENTS) == events
    sets = [CandidateSet("a", ("x", "y"), (0.5, 1.0), ("m", None))]
    assert codec.decode_candidate_sets(codec.encode_candidate_sets(sets)) == sets
    with pytest.raises(CodecError, match="wire version"):
        codec.unpack(msgpack.packb({"v": 99, "k": "events", "items": []}), codec.EVENTS)
    with pytest.raises(CodecError, match="expected a acks batch"):
        codec.unpack(codec.pack(codec.EVENTS, []), codec.ACKS)
    with pytest.raises(CodecError, match="undecodable"):
        codec.unpack(b"\xc1\xff", codec.EVENTS)


def test_an_events_batch_gives_its_items_packed_as_they_came() -> None:
    events = [event("c1", "savings_withdrawal", amount=10.0), event("c2", "balance_update",
                                                                     balance=-3.5)]
    items, packed = codec.unpack_events(codec.pack(codec.EVENTS, events))
    assert items == events
    assert packed == msgpack.packb(events, use_bin_type=True)
    # another envelope's layout (meta, keys in another order): the items only
    assert codec.unpack_events(codec.pack(codec.EVENTS, events, sent=1.0)) == (events, None)
    reordered = msgpack.packb({"items": events, "k": "events", "v": codec.WIRE_VERSION})
    assert codec.unpack_events(reordered) == (events, None)
    with pytest.raises(CodecError):
        codec.unpack_events(codec.pack(codec.ACKS, []))


def test_a_batchs_partition_counts_travel_flat_and_come_back_only_if_they_add_up() -> None:
    counts = {3: 2, 17: 1, 0: 5}
    flat = codec.flat_counts(counts)
    assert msgpack.unpackb(msgpack.packb(flat)) == flat  # a lane's msgpack carries it
    assert codec.counts_from_flat(flat, 8) == counts
    assert codec.counts_from_flat(flat, 7) is None  # not this batch's: the shard counts
    for bad in ([3, 2, 17], [3, 2, 3, 6], ["3", 8], [3, 0, 0, 8], [3, 8.0], [[3], 8],
                [True, 8], {3: 8}, None):
        assert codec.counts_from_flat(bad, 8) is None, bad


def test_verdicts_and_their_meta_come_back_from_one_reply() -> None:
    best = Candidate(action_id="x", moment_id="m", p=0.5, c=1.0, v=2.0, l=1.0, score=1.0)
    verdicts = [Verdict("a", (best,), "x", ()), Verdict("b", (), None, ())]
    reply = codec.encode_verdicts(verdicts, removed={"b": [["y", "budget", "spent"]]},
                                  treatment_id="t1")
    assert codec.decode_verdict_batch(reply) == (
        verdicts, {"removed": {"b": [["y", "budget", "spent"]]}, "treatment_id": "t1"})
    assert codec.decode_verdict_batch(codec.encode_verdicts(verdicts)) == (verdicts, {})
    with pytest.raises(CodecError, match="malformed verdicts"):
        codec.decode_verdict_batch(codec.pack(codec.VERDICTS, [["a", None, [["x"]], []]]))


@pytest.fixture
def signals() -> dict[str, SignalSchema]:
    return Catalog.from_wire(
        CatalogFile.model_validate(COMPETING_CATALOG).model_dump()).signal_schemas


@pytest.mark.parametrize(("wire", "field", "reason"), [
    (["e1", "", "savings_withdrawal", 1, "", {"amount": 1.0}], "customer_id", "customer_id"),
    (["e1", "c", "teleport", 1, "", {}], "type", "unknown signal type 'teleport'"),
    (["e1", "c", "savings_withdrawal", 1, "", {"amount": "x"}], "attributes.amount",
     "must be number, got str"),
    (["e1", "c", "savings_withdrawal", 1, "", {}], "attributes.amount", "required"),
    (["e1", "c", "savings_withdrawal", 1, "", {"amount": 1, "pin": 1234}], "attributes.pin",
     "not declared"),
    (["e1", "c", "savings_withdrawal", None, "", {"amount": 1.0}], "occurred_at", "timestamp"),
    (["", "c", "savings_withdrawal", 1, "", {"amount": 1.0}], "event_id", "event_id"),
    (["e1", "c", "savings_withdrawal", 1, "", {"amount": True}], "attributes.amount", "bool"),
    ("not a list", "event", "6 fields"),
])
def test_invalid_events_name_the_field(signals: dict[str, SignalSchema], wire: object, field: str,
                                       reason: str) -> None:
    with pytest.raises(EventRejected) as info:
        validate_wire_event(wire, signals)
    assert info.value.field == field
    assert reason in info.value.reason


def test_valid_event_accepts_int_for_number(signals: dict[str, SignalSchema]) -> None:
    validate_wire_event(["e1", "c", "savings_withdrawal", 5, "atm", {"amount": 7}], signals)


def withdrawal(event_id: str, customer_id: str, amount: object = 5.0) -> list[object]:
    return [event_id, customer_id, "savings_withdrawal", 1, "atm", {"amount": amount}]


def test_a_direct_submit_keeps_the_valid_events_in_order_and_names_the_others(
        signals: dict[str, SignalSchema]) -> None:
    table = PartitionTable.round_robin(8, 2)
    mine = [c for c in (f"c{i}" for i in range(20)) if table.shard_of(c) == 1][:3]
    events = [withdrawal("e1", mine[0]), withdrawal("e2", mine[1], "x"),
              withdrawal("e3", mine[2]), "not an event"]
    valid, rejected, partitions = admit_events(events, signals, table, 1)
    assert valid == [events[0], events[2]]
    assert [(i, exc.field) for i, exc in rejected] == [(1, "attributes.amount"), (3, "event")]
    assert sum(partitions.values()) == 2  # what the journal counts
    assert set(partitions) == {table.partition(mine[0]), table.partition(mine[2])}


def test_a_direct_submit_with_another_shards_customer_is_refused_whole(
        signals: dict[str, SignalSchema]) -> None:
    table = PartitionTable.round_robin(8, 2)
    theirs = next(c for c in (f"c{i}" for i in range(20)) if table.shard_of(c) == 0)
    mine = next(c for c in (f"c{i}" for i in range(20)) if table.shard_of(c) == 1)
    with pytest.raises(WrongShard) as info:
        admit_events([withdrawal("e1", mine), withdrawal("e2", theirs)], signals, table, 1)
    assert (info.value.customer_id, info.value.owner) == (theirs, 0)
    assert "ask Routes again" in str(info.value)
    # an invalid event's customer is not asked about: the event is refused for what it is
    valid, rejected, _ = admit_events([withdrawal("e3", theirs, "x")], signals, table, 1)
    assert (valid, [exc.field for _, exc in rejected]) == ([], ["attributes.amount"])
