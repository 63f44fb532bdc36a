"""Property tests: incremental count / distinct / sequence detectors against brute force.

Random streams mix signal types, out-of-order times and duplicate event ids. References keep
every event and recompute from scratch with the documented semantics.
"""

from __future__ import annotations

from typing import Any

from detector_kit import T0, make_catalog
from hypothesis import given, settings
from hypothesis import strategies as st

from shush.engine.customer import CustomerState
from shush.engine.signals import SignalRecord

W = 100  # window, ms
Event = tuple[str, str, int, str]  # event_id, type, time offset, code

events_st = st.lists(
    st.tuples(st.sampled_from(["e0", "e1", "e2", "e3", "e4", "e5", "e6", "e7", "e8", "e9",
                               "e10", "e11", "e12", "e13", "e14", "e15", "e16", "e17", "e18",
                               "e19", "e20", "e21", "e22", "e23"]),
              st.sampled_from("abc"), st.integers(0, 400), st.sampled_from(["x", "y", "z", "w"])),
    max_size=40,
)


def run(detector: dict[str, Any], events: list[Event]) -> list[int]:
    """Offsets of the events at which the detector fired."""
    catalog = make_catalog(detector, lateness_s=10_000)
    customer = CustomerState("cust", dedup_ids=1000)
    fired = []
    for event_id, type_, t, code in events:
        out = customer.apply(SignalRecord(event_id, "cust", type_, T0 + t, "p", {"code": code}),
                             catalog)
        if out:
            fired.append(t)
    return fired


def dedup(events: list[Event]) -> list[Event]:
    seen: set[str] = set()
    out = []
    for e in events:
        if e[0] not in seen:
            seen.add(e[0])
            out.append(e)
    return out


def window_reference(events: list[Event], at_least: int, refire: str, cooldown: int,
                     distinct: bool) -> list[int]:
    known: list[Event] = []
    frontier: int | None = None
    armed, fired_at, fired = True, None, []
    for e in dedup(events):
        if e[1] != "a":
            continue
        t = e[2]
        frontier = t if frontier is None else max(frontier, t)
        floor = frontier - W
        if t <= floor:
            continue
        inside = [k for k in known if floor < k[2] <= frontier]
        if distinct:
            before = len({k[3] for k in inside})
            after = len({k[3] for k in inside} | {e[3]})
        else:
            before, after = len(inside), len(inside) + 1
        cooled = fired_at is None or t - fired_at >= cooldown
        if refire == "hysteresis":
            if before < at_least:
                armed = True
            hit = False
            if after >= at_least and armed:
                armed = False
                hit = cooled
        else:
            hit = after >= at_least and cooled
        if hit:
            fired.append(t)
            fired_at = t
        known.append(e)
    return fired


@settings(max_examples=150, deadline=None)
@given(events_st, st.integers(1, 4), st.sampled_from(["hysteresis", "interval"]),
       st.sampled_from([0, 50]))
def test_count_matches_brute_force(events: list[Event], at_least: int, refire: str,
                                   cooldown: int) -> None:
    det = {"id": "d", "kind": "count", "signal": "a", "window_s": W / 1000,
           "at_least": at_least, "refire": refire, "cooldown_s": cooldown / 1000, "moment": "m"}
    assert run(det, events) == window_reference(events, at_least, refire, cooldown, False)


@settings(max_examples=150, deadline=None)
@given(events_st, st.integers(1, 4), st.sampled_from(["hysteresis", "interval"]))
def test_distinct_matches_brute_force(events: list[Event], at_least: int, refire: str) -> None:
    det = {"id": "d", "kind": "distinct", "signal": "a", "attribute": "code",
           "window_s": W / 1000, "at_least": at_least, "refire": refire, "moment": "m"}
    assert run(det, events) == window_reference(events, at_least, refire, 0, True)


def sequence_reference(events: list[Event], steps: list[str], cooldown: int) -> list[int]:
    """Fire at the first event that ends a chain of the steps (positions increasing, after the
    previous match, last time - first time < W); then skip past it."""
    evs = dedup(events)
    last_match, fired_at, fired = -1, None, []
    for i, (_, type_, t, _) in enumerate(evs):
        if type_ != steps[-1]:
            continue
        # latest[p] = latest start time of a chain over steps[:j+1] ending at position p
        latest: dict[int, int] = {p: evs[p][2] for p in range(last_match + 1, i)
                                  if evs[p][1] == steps[0]}
        for step in steps[1:-1]:
            nxt: dict[int, int] = {}
            for p in range(last_match + 1, i):
                if evs[p][1] == step:
                    starts = [s for q, s in latest.items() if q < p]
                    if starts:
                        nxt[p] = max(starts)
            latest = nxt
        if latest and t - max(latest.values()) < W:
            last_match = i
            if fired_at is None or t - fired_at >= cooldown:
                fired.append(t)
                fired_at = t
    return fired


@settings(max_examples=200, deadline=None)
@given(events_st, st.sampled_from([["a", "b"], ["a", "b", "c"], ["a", "a"], ["a", "c", "a"]]),
       st.sampled_from([0, 60]))
def test_sequence_matches_brute_force_on_in_order_streams(events: list[Event], steps: list[str],
                                                          cooldown: int) -> None:
    in_order = sorted(events, key=lambda e: e[2])
    det = {"id": "d", "kind": "sequence", "steps": [{"signal": s} for s in steps],
           "window_s": W / 1000, "max_partials": 64, "cooldown_s": cooldown / 1000,
           "moment": "m"}
    assert run(det, in_order) == sequence_reference(in_order, steps, cooldown)
