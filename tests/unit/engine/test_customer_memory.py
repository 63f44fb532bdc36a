"""What a customer keeps in memory: digests of its recent event ids (a ring of the last N, to
drop duplicates), and moments restored from a snapshot that share their strings."""

from __future__ import annotations

import sys

import msgpack
import pytest

from shush.engine.customer import DIGEST_BYTES, CustomerState, RecentIds, event_digest
from tests.unit.engine.detectors.detector_kit import T0, make_catalog, signal

CATALOG = make_catalog({"id": "big", "kind": "threshold", "signal": "a", "attribute": "x",
                        "op": ">", "value": 10, "moment": "big"})


def test_the_ring_forgets_the_oldest_id_first() -> None:
    ring = RecentIds(3)
    for name in ("e1", "e2", "e3", "e4"):
        ring.add_new(event_digest(name))
    assert [event_digest(n) in ring for n in ("e1", "e2", "e3", "e4")] == [False, True, True,
                                                                          True]
    assert ring.add_new(event_digest("e4")) is False  # held: nothing moves
    assert ring.add_new(event_digest("e5")) is True
    assert event_digest("e2") not in ring and event_digest("e5") in ring
    assert len(ring) == 3
    again = RecentIds(3, ring.oldest_first())  # a snapshot keeps the order of eviction
    again.add_new(event_digest("e6"))
    assert event_digest("e3") not in again and event_digest("e4") in again


def test_a_match_across_two_digests_is_not_a_hit() -> None:
    ring = RecentIds(2, bytes(range(16)))
    assert bytes(range(4, 12)) not in ring  # the tail of one digest and the head of the next
    assert bytes(range(8, 16)) in ring
    assert ring.add_new(bytes(range(4, 12))) is True and bytes(range(4, 12)) in ring


def test_a_smaller_size_keeps_the_newest_digests() -> None:
    digests = [event_digest(f"e{i}") for i in range(5)]
    ring = RecentIds(2, b"".join(digests))
    assert [d in ring for d in digests] == [False, False, False, True, True]


def test_digests_of_a_torn_length_are_refused() -> None:
    with pytest.raises(ValueError, match="not a multiple of 8"):
        RecentIds(4, b"\x00" * (DIGEST_BYTES + 3))


def test_a_customer_drops_duplicates_across_a_snapshot() -> None:
    customer = CustomerState("c1", dedup_ids=4)
    assert customer.apply(signal("a", T0, "e1", x=20), CATALOG) is not None
    assert customer.apply(signal("a", T0 + 1, "e1", x=20), CATALOG) is None
    data = msgpack.unpackb(msgpack.packb(customer.to_snapshot()), raw=False)
    assert len(data["recent"]) == DIGEST_BYTES  # one digest, not the id
    back = CustomerState.from_snapshot(data)
    assert back.seen("e1") and not back.seen("e2")
    assert back.apply(signal("a", T0 + 2, "e1", x=20), CATALOG) is None


def test_a_version_2_snapshot_loads_with_its_ids_digested() -> None:
    data = CustomerState("c1", dedup_ids=2).to_snapshot()
    del data["recent"]
    data.update(v=2, recent_ids=["e1", "e2", "e3"])  # more than dedup_ids: the newest stay
    back = CustomerState.from_snapshot(data)
    assert [back.seen(e) for e in ("e1", "e2", "e3")] == [False, True, True]


def test_restored_moments_share_their_customer_id_and_interned_names() -> None:
    customer = CustomerState("cust")  # the kit's signals are this customer's
    customer.apply(signal("a", T0, "e1", x=20), CATALOG)
    data = msgpack.unpackb(msgpack.packb(customer.to_snapshot()), raw=False)
    back = CustomerState.from_snapshot(data)
    [moment] = back.moments
    assert moment == customer.moments[0]
    assert moment.customer_id is back.customer_id
    assert moment.name is sys.intern("big") and moment.detector_id is sys.intern("big")
    [twin] = CustomerState.from_snapshot(data).moments
    assert twin.half_life_s is moment.half_life_s and twin.ttl_s is moment.ttl_s


def test_snapshot_moments_leave_out_their_customer_and_older_ones_still_load() -> None:
    customer = CustomerState("cust")
    customer.apply(signal("a", T0, "e1", x=20), CATALOG)
    data = customer.to_snapshot()
    [packed] = data["moments"]
    assert "cust" not in packed  # the snapshot holds its customer's id once
    moment = customer.moments[0]
    data["v"] = 2  # a version-2 moment repeats the customer's id, second
    data["moments"] = [[packed[0], packed[1], "cust", *packed[2:]]]
    data["recent_ids"] = ["e1"]
    del data["recent"]
    assert CustomerState.from_snapshot(data).moments == [moment]


def test_the_latest_attributes_of_each_type_follow_event_time_not_arrival() -> None:
    customer = CustomerState("c1")
    customer.apply(signal("a", T0 + 10, x=1), CATALOG)
    customer.apply(signal("a", T0 + 20, x=2), CATALOG)
    customer.apply(signal("a", T0 + 15, x=3), CATALOG)  # late, older than the latest "a"
    customer.apply(signal("b", T0 + 5, x=4), CATALOG)  # late, but the first "b"
    customer.apply(signal("a", T0 + 20, x=5), CATALOG)  # the same time as the latest: taken
    assert customer.last == {"a": {"x": 5, "_at": T0 + 20}, "b": {"x": 4, "_at": T0 + 5}}
    assert customer.last_event_ms == T0 + 20
    customer.apply(signal("b", T0 + 8, x=6), CATALOG)  # late, newer than the "b" held
    assert customer.last["b"] == {"x": 6, "_at": T0 + 8}
