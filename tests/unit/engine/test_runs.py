"""Emergency runs: population filters (masks, profiles, expressions), throttle, progress."""

from __future__ import annotations

import random

import pytest
from pydantic import ValidationError

from shush.engine.customer import CustomerState
from shush.engine.errors import ConfigError
from shush.engine.hot_columns import HotColumns, HotColumnsSpec
from shush.engine.runs import (
    EmergencyRun,
    PopulationFilter,
    RunProgress,
    RunsConfig,
    RunState,
    Throttle,
)
from shush.policies.expressions import compile_expression

SPEC = HotColumnsSpec.model_validate({
    "categorical": [{"name": "zip", "attribute": "zip_code", "normalize": "zip5"},
                    {"name": "region"}, {"name": "segment"}, {"name": "country"}],
    "sets": [{"name": "products"}],
})
ZIPS = [f"{z:05d}" for z in range(2100, 2160)]
SEGMENTS = ["mass", "affluent", "student"]
PRODUCTS = ["card", "mortgage", "savings", "loan"]


def population(n: int, seed: int = 7) -> tuple[HotColumns, dict[str, dict[str, object]]]:
    rng = random.Random(seed)
    cols, profiles = HotColumns(SPEC), {}
    for i in range(n):
        profile: dict[str, object] = {
            "zip_code": rng.choice(ZIPS), "segment": rng.choice(SEGMENTS),
            "region": rng.choice(["MA", "NH"]), "country": "US",
            "products": rng.sample(PRODUCTS, rng.randint(0, 2)),
        }
        state = CustomerState(f"c{i}")
        state.profile = profile
        cols.update(state)
        profiles[f"c{i}"] = profile
    return cols, profiles


def test_a_filter_needs_a_clause() -> None:
    with pytest.raises(ValidationError, match="needs a clause"):
        PopulationFilter()
    assert PopulationFilter(everyone=True).clauses() == {}


def test_select_reaches_exactly_the_customers_of_25_zips() -> None:
    cols, profiles = population(3000)
    chosen = ZIPS[:25]
    rows = PopulationFilter(zips=tuple(chosen)).select(cols)
    selected = set(cols.ids(rows))
    assert selected == {cid for cid, p in profiles.items() if p["zip_code"] in chosen}
    assert len(rows) == len(selected)  # each once


def test_zip_values_are_normalized_like_the_columns() -> None:
    cols = HotColumns(SPEC)
    state = CustomerState("a")
    state.profile = {"zip_code": "2134-0001"}
    cols.update(state)
    assert cols.ids(PopulationFilter(zips=("2134",)).select(cols)) == ["a"]
    assert PopulationFilter(zips=("02134",)).matches_profile(state.profile, SPEC)


def test_clauses_are_anded_and_values_ored_and_select_agrees_with_profiles() -> None:
    cols, profiles = population(2000)
    filters = [
        PopulationFilter(zips=tuple(ZIPS[:10]), segments=("mass", "student")),
        PopulationFilter(regions=("NH",), products_any=("mortgage", "loan")),
        PopulationFilter(countries=("US",), attributes={"segment": ("affluent",)}),
        PopulationFilter(everyone=True),
    ]
    for f in filters:
        by_mask = set(cols.ids(f.select(cols)))
        by_profile = {cid for cid, p in profiles.items() if f.matches_profile(p, SPEC)}
        assert by_mask == by_profile, f
        expression = compile_expression(f.to_expression(SPEC))
        by_expression = {cid for cid, p in profiles.items()
                         if expression.evaluate({"profile": p})}
        assert by_expression == by_mask, f.to_expression(SPEC)


def test_select_in_chunks_covers_the_same_rows() -> None:
    cols, _ = population(1000)
    f = PopulationFilter(segments=("mass",))
    chunks = [row for start in range(0, 1000, 128)
              for row in f.select(cols, start, start + 128).tolist()]
    assert chunks == f.select(cols).tolist()


def test_where_is_carried_into_the_expression() -> None:
    f = PopulationFilter(segments=("mass",), where="profile.age >= 18")
    text = f.to_expression(SPEC)
    assert text == "profile.segment in ['mass'] and (profile.age >= 18)"
    assert compile_expression(text).evaluate({"profile": {"segment": "mass", "age": 30}})


def test_check_refuses_columns_the_shard_does_not_keep() -> None:
    with pytest.raises(ConfigError) as err:
        PopulationFilter(attributes={"tier": ("gold",)}).check(SPEC)
    assert err.value.field == "tier"
    PopulationFilter(zips=("02134",), products_any=("card",)).check(SPEC)


def test_emergency_run_moments_share_the_dedup_key() -> None:
    f = PopulationFilter(zips=("02134",))
    first = EmergencyRun(run_id="r1", population=f, moment="storm", dedup_key="nws:abc")
    update = EmergencyRun(run_id="r2", population=f, moment="storm", dedup_key="nws:abc")
    plain = EmergencyRun(run_id="r3", population=f, moment="storm", half_life_s=100)
    assert first.moment_for("a", 1).moment_id == update.moment_for("a", 2).moment_id
    assert plain.moment_for("a", 1).moment_id == "run:r3"
    moment = plain.moment_for("a", 1000)
    assert (moment.name, moment.urgency, moment.ttl_s, moment.relevance(1000)) == (
        "storm", 1.0, 400.0, 1.0)
    assert plain.shard_rate(4) == 50.0
    with pytest.raises(ValidationError):
        EmergencyRun(run_id="r", population=f, moment="storm", rate_per_s=0)


def test_throttle_grants_the_burst_then_the_rate() -> None:
    throttle = Throttle(rate_per_s=100, burst=10, now_ms=0)
    assert throttle.take(50, 0) == 10
    assert throttle.take(5, 0) == 0 and throttle.wait_ms(5, 0) == 50
    assert throttle.take(5, 50) == 5
    granted = sum(throttle.take(1000, t) for t in range(150, 10_150, 100))
    assert granted == 1000  # 10 s (50 ms to 10,050 ms) at 100/s
    assert throttle.take(1000, 1_000_000) == 10  # never more than the burst
    assert throttle.wait_ms(1, 1_000_000) == 10 and throttle.wait_ms(1, 1_000_010) == 0
    with pytest.raises(ValueError):
        Throttle(rate_per_s=0, burst=1, now_ms=0)


def test_progress_combines_shards_and_round_trips() -> None:
    a = RunProgress("r", RunState.DONE, selected=10, injected=9, treated=7, skipped=1,
                    started_ms=100, finished_ms=500)
    b = RunProgress("r", RunState.RUNNING, selected=5, injected=2, started_ms=90)
    total = RunProgress.combine("r", [a, b])
    assert (total.state, total.selected, total.injected, total.treated, total.skipped) == (
        RunState.RUNNING, 15, 11, 7, 1)
    assert total.started_ms == 90 and total.finished_ms is None and total.remaining == 3
    b.state, b.finished_ms = RunState.DONE, 900
    done = RunProgress.combine("r", [a, b])
    assert done.state is RunState.DONE and done.finished_ms == 900
    assert RunProgress.from_wire(a.to_wire()) == a


def test_runs_config_defaults() -> None:
    config = RunsConfig()
    assert config.default_rate_per_s <= config.max_rate_per_s
