"""Trend and forecast keep their history in float buffers: a customer restored from a
snapshot, or holding state written when the buffers were lists, goes on exactly as one that
never stopped."""

from __future__ import annotations

import random
from array import array

from detector_kit import DAY, T0, make_catalog, signal

from shush.engine.customer import CustomerState

CATALOG = make_catalog(
    {"id": "tr", "kind": "trend", "signal": "a", "attribute": "x", "z_threshold": 1.5,
     "points": 8, "min_points": 4, "moment": "dropping"},
    {"id": "fc", "kind": "forecast", "signal": "a", "attribute": "x", "op": "<", "value": 0,
     "horizon_s": 3 * 86400, "points": 6, "moment": "heading_negative"})


def _series(n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [1000 - 40 * i + rng.gauss(0, 60) for i in range(n)]


def _feed(customer: CustomerState, values: list[float], start: int) -> list[tuple[str, int]]:
    out = []
    for i, x in enumerate(values, start):
        for m in customer.apply(signal("a", T0 + i * DAY, f"e{i}", x=x), CATALOG) or ():
            out.append((m.name, i))
    return out


def _restored(customer: CustomerState) -> CustomerState:
    return CustomerState.from_packed(customer.pack_snapshot())


def test_a_restored_customer_fires_as_one_that_never_stopped() -> None:
    for seed in range(20):
        values = _series(30, seed)
        straight = CustomerState("cust")
        expected = _feed(straight, values, 0)
        stopped = CustomerState("cust")
        got = _feed(stopped, values[:12], 0)
        assert type(stopped.detector_state["fc"]["px"]) is array
        again = _restored(stopped)
        assert isinstance(again.detector_state["fc"]["px"], bytes)  # until first used
        assert again.to_snapshot() == stopped.to_snapshot()
        got += _feed(again, values[12:], 12)
        assert got == expected, seed
        assert again.pack_snapshot() == straight.pack_snapshot()


def test_state_written_as_lists_goes_on_the_same() -> None:
    values = _series(30, 7)
    straight = CustomerState("cust")
    expected = _feed(straight, values, 0)
    old = CustomerState("cust")
    got = _feed(old, values[:10], 0)
    trend, forecast = old.detector_state["tr"], old.detector_state["fc"]
    trend["buf"] = list(trend["buf"])  # the layout before float buffers
    forecast["pts"] = [[t, x] for t, x in zip(forecast.pop("pt"), forecast.pop("px"),
                                                strict=True)]
    got += _feed(old, values[10:], 10)
    assert got == expected
    assert "pts" not in forecast and type(forecast["pt"]) is array
