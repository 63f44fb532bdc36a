"""Detectors as they run: the catalog's runtimes are slotted plain copies of the specs that run
the specs' own methods, and make the same moments and state as the specs themselves."""

from __future__ import annotations

import pickle
import random
from typing import Any

import pytest
from detector_kit import DAY, HOUR, T0, make_catalog
from pydantic import BaseModel

from shush.engine.catalog import Catalog
from shush.engine.customer import CustomerState
from shush.engine.detectors.float_buffer import plain
from shush.engine.detectors.runtime import runtime
from shush.engine.signals import SignalRecord

EVERY_KIND: list[dict[str, Any]] = [
    {"id": "th", "kind": "threshold", "signal": "a", "attribute": "x", "op": "<",
     "value": 20, "reset": 40, "moment": "low"},
    {"id": "lv", "kind": "threshold", "signal": "a", "attribute": "x", "op": ">",
     "value": 90, "mode": "level", "cooldown_s": 600, "where": {"code": ["p", "q"]},
     "moment": "high"},
    {"id": "st", "kind": "status_change", "signal": "b", "attribute": "status",
     "key_attribute": "k", "to_values": ["late"], "moment": "late"},
    {"id": "cn", "kind": "count", "signal": "b", "window_s": 3600, "at_least": 3,
     "moment": "many_b"},
    {"id": "ds", "kind": "distinct", "signal": "a", "attribute": "code", "window_s": 7200,
     "at_least": 3, "internal": True, "moment": "varied"},
    {"id": "sq", "kind": "sequence", "steps": [{"signal": "a", "where": {"code": "p"}},
                                               {"signal": "b"}, {"signal": "c"}],
     "window_s": 3600, "moment": "abc"},
    {"id": "nf", "kind": "not_followed_by", "first": {"signal": "b"},
     "then": {"signal": "c"}, "window_s": 1800, "moment": "no_c"},
    {"id": "ab", "kind": "absence", "signal": "c", "period_s": 2 * 86400,
     "arm_on": ["profile"], "moment": "silent"},
    {"id": "tr", "kind": "trend", "signal": "a", "attribute": "x", "z_threshold": 1.5,
     "points": 12, "min_points": 5, "moment": "dropping"},
    {"id": "sl", "kind": "trend", "signal": "a", "attribute": "x", "method": "ewma_slope",
     "direction": "up", "slope_per_day": 50, "moment": "rising"},
    {"id": "fc", "kind": "forecast", "signal": "a", "attribute": "x", "op": "<", "value": 0,
     "horizon_s": 86400, "moment": "heading_negative"},
    {"id": "ms", "kind": "milestone", "signal": "profile", "attribute": "birth_date",
     "years": [18, 30], "moment": "birthday"},
    {"id": "cl", "kind": "calendar", "holiday": "Thanksgiving", "days_before": 7,
     "arm_on": ["profile"], "moment": "holiday_soon"},
    {"id": "cb", "kind": "combination", "members": ["th", "cn", "ds"], "at_least": 2,
     "window_s": 86400, "moment": "two_signs"},
]


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return make_catalog(*EVERY_KIND, lateness_s=10 * 86400)


def test_every_kind_runs_as_a_slotted_plain_copy_of_its_spec(catalog: Catalog) -> None:
    assert len({d["kind"] for d in EVERY_KIND}) == 12  # every kind the catalog accepts
    for detector_id, spec in catalog.detectors.items():
        made = catalog.runtimes[detector_id]
        assert not isinstance(made, BaseModel) and not hasattr(made, "__dict__")
        assert made.spec is spec  # type: ignore[attr-defined]
        assert type(made).detect is type(spec).detect  # the spec's own code, not a copy
        assert type(made).uses_timer is type(spec).uses_timer
        for name in type(spec).model_fields:
            value, copied = getattr(spec, name), getattr(made, name)
            if isinstance(value, BaseModel):  # a not-followed-by's first and then
                assert not isinstance(copied, BaseModel) and copied.spec is value, name
            elif name != "steps":
                assert copied is value, name
    steps = catalog.runtimes["sq"].steps  # type: ignore[union-attr]
    assert isinstance(steps, tuple) and not any(isinstance(s, BaseModel) for s in steps)
    assert [s.spec for s in steps] == catalog.detectors["sq"].steps  # type: ignore[union-attr]


def test_the_hot_paths_hold_the_runtimes(catalog: Catalog) -> None:
    for steps in catalog.detector_steps.values():
        for detector, detector_id, _, _ in steps:
            assert detector is catalog.runtimes[detector_id]
    assert all(combination is catalog.runtimes["cb"]
               for combination in catalog.combinations_by_member["cn"])


def test_a_runtime_is_read_only_and_pickles_as_its_spec(catalog: Catalog) -> None:
    made = catalog.runtimes["th"]
    with pytest.raises(AttributeError, match="read-only: cannot change 'value'"):
        made.value = 5  # type: ignore[misc]
    with pytest.raises(AttributeError, match="cannot change 'op'"):
        del made.op  # type: ignore[misc]
    again = pickle.loads(pickle.dumps(made))
    assert type(again) is type(made) and again.spec == made.spec  # type: ignore[attr-defined]
    assert repr(made) == f"runtime({made.spec!r})"  # type: ignore[attr-defined]
    assert type(runtime(catalog.detectors["lv"])) is type(made)  # one class per kind


def _spec_driven(wire: dict[str, Any]) -> Catalog:
    """The same catalog with the pydantic specs on its hot paths instead of the runtimes."""
    specs = Catalog.from_wire(wire)
    specs.runtimes = dict(specs.detectors)
    specs.detector_steps = {kind: tuple((specs.detectors[s[1]], *s[1:]) for s in steps)
                            for kind, steps in specs.detector_steps.items()}
    specs.combinations_by_member = {
        member: [specs.detectors[c.id] for c in combos]  # type: ignore[misc]
        for member, combos in specs.combinations_by_member.items()}
    return specs


def _stream(seed: int) -> list[tuple[str, int, dict[str, Any]] | int]:
    """Random signals a/b/c over a few days, with out-of-order ones, profiles and clock ticks
    (an int)."""
    rnd = random.Random(seed)
    stream: list[tuple[str, int, dict[str, Any]] | int] = [
        ("profile", T0, {"birth_date": "2008-06-20", "country": "US"})]
    t, x = T0, 60.0
    for _ in range(600):
        t += rnd.randint(0, 3 * HOUR // 4)
        at = t - rnd.randint(0, HOUR) if rnd.random() < 0.1 else t
        kind = rnd.choice("aabc")
        x += rnd.gauss(-0.5, 12)
        attrs = {"x": round(x, 2), "code": rnd.choice("pqrs"), "k": rnd.choice("uv"),
                 "status": rnd.choice(["ok", "late"])}
        stream.append((kind, at, attrs))
        if rnd.random() < 0.05:
            stream.append(t + rnd.randint(0, DAY))
    return stream


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_runtimes_make_the_same_moments_and_state_as_the_specs(seed: int) -> None:
    wire = make_catalog(*EVERY_KIND, lateness_s=10 * 86400).to_wire()
    runs = []
    for catalog in (Catalog.from_wire(wire), _spec_driven(wire)):
        customer = CustomerState("cust", dedup_ids=10_000)
        fired: list[tuple[str, str, int]] = []
        for n, item in enumerate(_stream(seed)):
            if isinstance(item, int):
                moments = customer.on_time(item, catalog)
            else:
                kind, at, attrs = item
                moments = customer.apply(SignalRecord(f"e{n}", "cust", kind, at, "t", attrs),
                                         catalog) or []
            fired.extend((m.name, m.moment_id, m.occurred_at_ms) for m in moments)
        states = {d: plain(s) for d, s in customer.detector_state.items()}
        runs.append((fired, states, dict(customer.timers)))
    assert runs[0] == runs[1]
    assert len({name for name, _, _ in runs[0][0]}) >= 6  # most kinds fired along the way
