"""HotColumns: O(1) updates from customer state, growth, vocabularies, snapshots, memory."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from shush.engine.customer import CustomerState
from shush.engine.errors import CodecError, ConfigError
from shush.engine.hot_columns import (
    NEVER_MS,
    HotColumns,
    HotColumnsSpec,
    normalize_value,
    spec_from_mapping,
)

DAY_MS = 86_400_000
T0 = 1_750_000_000_000

TYPICAL = spec_from_mapping({
    "signals": ["deposit", "savings_withdrawal", "card_declined", "login"],
    "numeric": [{"name": "balance", "signal": "balance_update", "attribute": "balance"},
                {"name": "churn_score"}],
    "categorical": [{"name": "zip", "normalize": "zip5"}, {"name": "region"},
                    {"name": "segment", "normalize": "lower"}, {"name": "country",
                                                                "normalize": "upper"}],
    "sets": [{"name": "products"}],
})


def customer(cid: str, last: dict[str, dict[str, object]] | None = None,
             **profile: object) -> CustomerState:
    state = CustomerState(cid)
    state.last = dict(last or {})
    state.profile = dict(profile)
    return state


def test_update_copies_the_hot_fields_of_a_customer_state() -> None:
    cols = HotColumns(TYPICAL)
    row = cols.update(customer(
        "alice", {"deposit": {"amount": 10.0, "_at": T0}, "balance_update": {"balance": 250,
                                                                              "_at": T0 + 5}},
        churn_score=0.9, zip="2134-0001", region="MA", segment="Affluent", country="us",
        products=["card", "mortgage"]), last_contact_ms=T0 - DAY_MS)
    assert row == 0 and "alice" in cols and cols.row_of("alice") == 0
    assert cols.last_seen("deposit")[0] == T0
    assert cols.last_seen("login")[0] == NEVER_MS
    assert cols.numeric("balance")[0] == 250.0 and cols.numeric("churn_score")[0] == 0.9
    assert cols.vocabulary("zip")[cols.codes("zip")[0]] == "02134"
    assert cols.vocabulary("segment")[cols.codes("segment")[0]] == "affluent"
    assert cols.vocabulary("country")[cols.codes("country")[0]] == "US"
    assert cols.last_contact[0] == T0 - DAY_MS
    assert cols.first_seen[0] == T0  # the earliest event time observed
    bits, known = cols.bits_for("products", ["mortgage"])
    assert known and cols.set_masks("products")[0] & np.uint64(bits)


def test_missing_and_unusable_values_are_unknown() -> None:
    cols = HotColumns(TYPICAL)
    cols.update(customer("bob", churn_score=True, zip="not-a-zip", segment=""))
    assert math.isnan(cols.numeric("churn_score")[0])  # a bool is no score
    assert math.isnan(cols.numeric("balance")[0])
    assert cols.codes("zip")[0] == 0 and cols.codes("segment")[0] == 0
    assert cols.first_seen[0] == NEVER_MS and cols.set_masks("products")[0] == 0


def test_a_later_update_overwrites_and_first_seen_keeps_the_minimum() -> None:
    cols = HotColumns(TYPICAL)
    cols.update(customer("c", {"deposit": {"_at": T0}}, segment="mass"))
    cols.update(customer("c", {"deposit": {"_at": T0 + DAY_MS}, "login": {"_at": T0 - 5}},
                         segment="student"))
    assert cols.last_seen("deposit")[0] == T0 + DAY_MS
    assert cols.first_seen[0] == T0 - 5
    assert cols.vocabulary("segment")[cols.codes("segment")[0]] == "student"
    cols.set_contact("c", T0 + 10)
    cols.set_contact("c", T0)  # an older contact does not move it back
    assert cols.last_contact[0] == T0 + 10


def test_a_customer_keeps_its_row_and_a_row_it_keeps_from_elsewhere_is_checked() -> None:
    cols, other = HotColumns(TYPICAL), HotColumns(TYPICAL)
    other.update(customer("x"))
    state = customer("alice", segment="mass")
    assert cols.update(customer("bob")) == 0
    assert cols.update(state) == 1 and state.hot_row == 1
    assert cols.update(state) == 1  # from the customer, no lookup
    assert other.update(state) == 1 and other.row_of("alice") == 1  # row 1 there is new
    state.hot_row = 0  # bob's row here: not alice's, so looked up
    assert cols.update(state) == 1 and state.hot_row == 1
    assert cols.discard("alice")
    assert cols.update(state) == 2 and cols.row_of("alice") == 2  # a discarded row: a new one
    again = customer("alice")  # activated anew: a new object finds the row
    assert cols.update(again) == 2 and again.hot_row == 2


def test_an_update_without_the_profile_keeps_its_columns_but_a_new_row_takes_it() -> None:
    cols = HotColumns(TYPICAL)
    state = customer("e", {"balance_update": {"balance": 10, "_at": T0}}, segment="mass",
                     churn_score=0.5)
    cols.update(state, profile=False)  # a new row: the profile is copied all the same
    assert cols.vocabulary("segment")[cols.codes("segment")[0]] == "mass"
    state.profile["segment"] = "student"
    state.profile["churn_score"] = 0.7
    state.last["balance_update"] = {"balance": 20, "_at": T0 + 1}
    cols.update(state, profile=False)  # the caller knows no profile event came in
    assert cols.vocabulary("segment")[cols.codes("segment")[0]] == "mass"
    assert cols.numeric("churn_score")[0] == 0.5
    assert cols.numeric("balance")[0] == 20.0  # signal columns always follow
    cols.update(state)
    assert cols.vocabulary("segment")[cols.codes("segment")[0]] == "student"
    assert cols.numeric("churn_score")[0] == 0.7


def test_without_event_columns_an_update_without_the_profile_moves_only_first_seen() -> None:
    profile_only = spec_from_mapping({"categorical": [{"name": "segment"}],
                                      "numeric": [{"name": "churn_score"}]})
    cols = HotColumns(profile_only)
    state = customer("f", {"balance_update": {"balance": 10, "_at": T0}}, segment="mass",
                     churn_score=0.5)
    cols.update(state, profile=False, earliest_event_ms=T0)  # new row: all of it
    state.profile.update(segment="student", churn_score=0.7)
    cols.update(state, profile=False, earliest_event_ms=T0 - 5, last_contact_ms=T0 + 1)
    cols.update(state, profile=False, earliest_event_ms=T0 + 5)  # later: first_seen stays
    assert cols.vocabulary("segment")[cols.codes("segment")[0]] == "mass"
    assert cols.numeric("churn_score")[0] == 0.5
    assert cols.first_seen[0] == T0 - 5 and cols.last_contact[0] == T0 + 1
    cols.update(state, earliest_event_ms=T0 + 6)
    assert cols.vocabulary("segment")[cols.codes("segment")[0]] == "student"
    assert cols.numeric("churn_score")[0] == 0.7 and cols.first_seen[0] == T0 - 5


def test_products_as_a_comma_separated_string() -> None:
    cols = HotColumns(TYPICAL)
    cols.update(customer("d", products="card, savings"))
    bits, _ = cols.bits_for("products", ["savings"])
    assert cols.set_masks("products")[0] & np.uint64(bits)


def test_growth_keeps_every_row() -> None:
    cols = HotColumns(TYPICAL, capacity=16)
    for i in range(1000):
        cols.update(customer(f"c{i}", {"deposit": {"_at": T0 + i}}, zip=f"{i % 50:05d}"))
    assert cols.size == len(cols) == 1000 and cols.capacity == 1024
    assert cols.last_seen("deposit")[999] == T0 + 999
    assert cols.last_seen("deposit")[15] == T0 + 15  # copied over the first doubling
    assert cols.ids([0, 999]) == ["c0", "c999"]


def test_codes_widen_when_the_vocabulary_outgrows_uint8() -> None:
    cols = HotColumns(TYPICAL)
    for i in range(300):
        cols.update(customer(f"c{i}", zip=f"{10000 + i}"))
    assert cols.codes("zip").dtype == np.uint16
    assert cols.vocabulary("zip")[cols.codes("zip")[0]] == "10000"
    assert cols.vocabulary("zip")[cols.codes("zip")[299]] == "10299"


def test_add_many_then_bulk_codes() -> None:
    cols = HotColumns(TYPICAL)
    rows = cols.add_many(["a", "b", "a", "c"])
    assert rows.tolist() == [0, 1, 2] and cols.add_many(["a"]).tolist() == []
    cols.set_codes("zip", rows, ["1", "2-3", None])
    assert [cols.vocabulary("zip")[c] for c in cols.codes("zip")] == ["00001", "00002", None]


def test_discard_leaves_a_dead_row() -> None:
    cols = HotColumns(TYPICAL)
    cols.update(customer("gone", {"deposit": {"_at": T0}}, zip="02134"))
    cols.update(customer("kept"))
    assert cols.discard("gone") and not cols.discard("gone")
    assert "gone" not in cols and len(cols) == 1 and cols.size == 2
    assert cols.alive.tolist() == [False, True]
    assert cols.last_seen("deposit")[0] == NEVER_MS and cols.codes("zip")[0] == 0
    assert cols.ids([0, 1]) == ["kept"]


def test_snapshot_round_trip_is_exact() -> None:
    cols = HotColumns(TYPICAL)
    for i in range(40):
        cols.update(customer(f"c{i}", {"deposit": {"_at": T0 + i}}, churn_score=i / 40,
                             zip=f"{i:05d}", products=["card"] if i % 2 else []),
                    last_contact_ms=T0 - i)
    cols.discard("c3")
    back = HotColumns.from_bytes(cols.to_bytes())
    assert back.size == 40 and len(back) == 39 and "c3" not in back
    assert np.array_equal(back.last_seen("deposit"), cols.last_seen("deposit"))
    assert np.array_equal(back.numeric("churn_score"), cols.numeric("churn_score"),
                          equal_nan=True)
    assert np.array_equal(back.codes("zip"), cols.codes("zip"))
    assert back.vocabulary("zip") == cols.vocabulary("zip")
    assert np.array_equal(back.set_masks("products"), cols.set_masks("products"))
    assert np.array_equal(back.last_contact, cols.last_contact)
    back.update(customer("new", zip="00005"))  # restored columns are writable and growable
    assert back.codes("zip")[40] == cols.codes("zip")[5]


def test_restore_under_a_changed_spec_keeps_shared_columns() -> None:
    cols = HotColumns(TYPICAL)
    cols.update(customer("a", {"deposit": {"_at": T0}}, churn_score=0.5, zip="02134"))
    spec = HotColumnsSpec(signals=("deposit", "payment"), numeric=TYPICAL.numeric[1:],
                          categorical=TYPICAL.categorical[:1])
    back = HotColumns.from_bytes(cols.to_bytes(), spec)
    assert back.last_seen("deposit")[0] == T0 and back.last_seen("payment")[0] == NEVER_MS
    assert back.numeric("churn_score")[0] == 0.5
    assert back.vocabulary("zip")[back.codes("zip")[0]] == "02134"
    with pytest.raises(ConfigError):
        back.last_seen("login")


def test_undecodable_snapshots_raise_codec_errors() -> None:
    with pytest.raises(CodecError):
        HotColumns.from_bytes(b"\x93not msgpack")
    with pytest.raises(CodecError):
        HotColumns.from_bytes(b"\x81\xa1v\x07")  # {"v": 7}


def test_set_columns_hold_64_values_and_refuse_overflowed_ones() -> None:
    cols = HotColumns(TYPICAL)
    cols.update(customer("a", products=[f"p{i}" for i in range(70)]))
    assert bin(int(cols.set_masks("products")[0])).count("1") == 64
    with pytest.raises(ConfigError, match="overflowed"):
        cols.bits_for("products", ["p69"])
    assert cols.bits_for("products", ["never-held"]) == (0, False)


def test_typical_declaration_is_small() -> None:
    cols = HotColumns(TYPICAL)
    assert cols.column_bytes_per_customer() <= 100
    assert TYPICAL.row_bytes() == cols.column_bytes_per_customer()


def test_spec_refuses_duplicates_and_unknown_keys() -> None:
    with pytest.raises(ValidationError, match="declared twice"):
        HotColumnsSpec.model_validate({"numeric": [{"name": "x"}], "categorical": [{"name": "x"}]})
    with pytest.raises(ConfigError) as err:
        spec_from_mapping({"categorical": [{"name": "zip", "normalize": "zip9"}]})
    assert err.value.field == "categorical.0.normalize"


def test_normalize_value() -> None:
    assert normalize_value("501", "zip5") == "00501"
    assert normalize_value("123456", "zip5") is None
    assert normalize_value(" Mass ", "lower") == "mass"
    assert normalize_value(12, "none") == "12" and normalize_value(True, "none") is None
