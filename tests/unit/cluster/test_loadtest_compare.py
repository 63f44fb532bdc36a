"""Comparing two sets of loadtest reports (``benchmarks/loadtest_ab.py``'s arithmetic)."""

from __future__ import annotations

from typing import Any

import pytest

from shush.cluster.loadtest_compare import compare, format_rows, measures


def report(accepted: float, shards: float, routers: float, generator: float, *,
           p99: float | None = 15.0, decide_p99: float | None = 8.0) -> dict[str, Any]:
    cpu = {"shards": shards, "routers": routers, "load generator": generator,
           "all": shards + routers + generator}
    return {"throughput": {"accepted_eps": accepted},
            "latency_ms": {"submit_to_treatment": {"p99": p99}, "decide": {"p99": decide_p99}},
            "resources": {"cpu_us_per_event": cpu}}


def test_measures_read_each_role_against_the_load_generator() -> None:
    m = measures(report(40_000, shards=30.0, routers=10.0, generator=5.0))
    assert m["accepted events/s"] == 40_000
    assert m["engine µs/event"] == 40.0  # every role but the generator; "all" is not a role
    assert m["shards / load generator"] == pytest.approx(6.0)
    assert m["engine / load generator"] == pytest.approx(8.0)
    assert "load generator / load generator" not in m
    assert m["p99 submit → treatment ms"] == 15.0 and m["Decide p99 ms"] == 8.0


def test_a_missing_latency_or_generator_leaves_those_measures_out() -> None:
    m = measures(report(50_000, shards=30.0, routers=10.0, generator=0.0, decide_p99=None))
    assert "Decide p99 ms" not in m
    assert not any(name.endswith("/ load generator") for name in m)


def test_a_machine_that_slows_down_shows_in_raw_figures_not_in_ratios() -> None:
    # B's runs are 20 % slower machine-wide (the generator too) and its shards 5 % cheaper
    a = [report(45_000, 30.0, 10.0, 5.0), report(44_000, 31.0, 10.0, 5.1)]
    b = [report(38_000, 30.0 * 1.2 * 0.95, 12.0, 6.0),
         report(37_000, 31.0 * 1.2 * 0.95, 12.0, 6.12)]
    rows = {row.name: row for row in compare(a, b)}
    assert rows["shards µs/event"].change_pct == pytest.approx(14.0, abs=0.1)
    assert rows["shards / load generator"].change_pct == pytest.approx(-5.0, abs=0.1)
    assert rows["routers / load generator"].change_pct == pytest.approx(0.0, abs=0.1)
    assert rows["accepted events/s"].a == (45_000, 44_000)


def test_only_measures_every_report_has_are_compared() -> None:
    a = [report(45_000, 30.0, 10.0, 5.0)]
    b = [report(38_000, 30.0, 12.0, 6.0, decide_p99=None)]
    names = [row.name for row in compare(a, b)]
    assert "Decide p99 ms" not in names and "p99 submit → treatment ms" in names


def test_each_side_needs_a_report() -> None:
    with pytest.raises(ValueError, match="A has 0, B 1"):
        compare([], [report(1.0, 1.0, 1.0, 1.0)])


def test_the_table_gives_each_run_the_means_and_the_change() -> None:
    rows = compare([report(40_000, 30.0, 10.0, 5.0), report(42_000, 30.0, 10.0, 5.0)],
                   [report(44_000, 27.0, 10.0, 5.0), report(46_000, 27.0, 10.0, 5.0)])
    text = format_rows(rows)
    line = next(ln for ln in text.splitlines() if ln.startswith("accepted events/s"))
    assert "40,000, 42,000" in line and "41,000" in line and "+9.8%" in line
    shards = next(ln for ln in text.splitlines() if ln.startswith("shards µs/event"))
    assert shards.rstrip().endswith("-10.0%")
