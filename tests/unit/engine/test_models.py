"""The hot-path types' plain-data forms: what the ledger, the audit and the channels keep."""

from __future__ import annotations

import msgpack
import pytest

from shush.engine.models import Candidate, Decision, Removal, Treatment


def _treatment() -> Treatment:
    return Treatment(treatment_id="t1", idempotency_key="c1|offer|m1", customer_id="c1",
                     action_id="offer", channel="email", decided_at_ms=1_000,
                     payload={"kind": "marketing", "why": ["offer: best"]})


def test_a_treatment_survives_the_ledger_round_trip() -> None:
    treatment = _treatment()
    packed = msgpack.packb(treatment.to_wire(), use_bin_type=True)
    assert Treatment.from_wire(msgpack.unpackb(packed, raw=False)) == treatment


@pytest.mark.parametrize(("field", "value"), [
    ("customer_id", None), ("decided_at_ms", "soon"), ("payload", []), ("decided_at_ms", True)])
def test_a_damaged_treatment_names_its_field(field: str, value: object) -> None:
    data = {**_treatment().to_wire(), field: value}
    with pytest.raises(ValueError, match=field):
        Treatment.from_wire(data)


def test_a_treatment_is_a_mapping() -> None:
    with pytest.raises(ValueError, match="mapping"):
        Treatment.from_wire(["t1"])


def test_a_decision_keeps_every_factor_and_removal() -> None:
    decision = Decision(
        customer_id="c1", decided_at_ms=5, trigger="triggered",
        candidates=(Candidate("offer", "m1", 0.5, 0.8, 100.0, 1.0, 40.0),),
        removed=(Removal(action_id="loan", policy="caps", reason="3 this week"),),
        winner="offer", reasons=("offer: best",))
    wire = decision.to_wire()
    assert wire["candidates"] == [{"action_id": "offer", "moment_id": "m1", "p": 0.5, "c": 0.8,
                                   "v": 100.0, "l": 1.0, "score": 40.0}]
    assert wire["removed"] == [{"action_id": "loan", "policy": "caps", "reason": "3 this week"}]
    assert wire["also"] == [] and wire["reasons"] == ["offer: best"]
    assert msgpack.unpackb(msgpack.packb(wire), raw=False) == wire  # plain data only
