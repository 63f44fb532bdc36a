"""The adaptive propensity model, the outcome tracker, and convergence in a seeded simulation."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import msgpack
import numpy as np
import pytest

from shush.engine.models import Action
from shush.engine.outcomes import OutcomeKinds, OutcomeTracker
from shush.engine.propensity import PropensityModel

ACTIONS = {"a": Action(id="a", kind="marketing", channel="email", value=1, prior_propensity=0.3),
           "b": Action(id="b", kind="marketing", channel="email", value=1)}


def model(**kw: object) -> PropensityModel:
    return PropensityModel(["a", "b"], ACTIONS, 2.0, 1, feature_cardinalities=(3, 2),
                           action_features={"a": [0, 1]}, **kw)  # type: ignore[arg-type]


def test_starts_at_the_prior_with_little_evidence() -> None:
    m = model()
    assert m.mean().tolist() == pytest.approx([0.3, 0.5])
    p = m.estimate(np.array([0, 1, 0]), np.array([0, 0, 5]))
    assert p.tolist() == pytest.approx([0.3, 0.5, 0.3])
    draws = np.array([m.estimate(np.array([1]), np.array([0]), sample=True)[0]
                      for _ in range(2000)])
    assert draws.mean() == pytest.approx(0.5, abs=0.03)  # Beta(2, 2)
    assert draws.std() == pytest.approx((1 / 20) ** 0.5, abs=0.02)


def test_bins_are_mixed_radix_per_action() -> None:
    m = model()
    bins = m.bins_for(np.array([0, 0, 1]), np.array([[2, 1], [1, 0], [2, 1]]))
    assert bins.tolist() == [2 + 3 * 1, 1, 0]  # b uses no feature
    assert m.pos.shape == (2, 6)


def test_learns_per_bin_with_the_pooled_prior() -> None:
    m = model()
    for _ in range(40):
        m.record("a", True, feature_bin=5)
    for _ in range(10):
        m.record("a", False, feature_bin=5)
    pooled = (0.3 * 2 + 40) / 52
    assert m.mean()[0] == pytest.approx(pooled)
    assert m.estimate(np.array([0]), np.array([5]))[0] == pytest.approx((pooled * 2 + 40) / 52)
    assert m.estimate(np.array([0]), np.array([1]))[0] == pytest.approx(pooled)  # unseen bin
    m.update(np.array([1, 1, 1]), np.array([0, 0, 0]), np.array([True, False, False]))
    assert m.evidence("b") == (1.0, 2.0)
    assert m.table([2, 1]).tolist() == pytest.approx(
        [(pooled * 2 + 40) / 52, (0.5 * 2 + 1) / 5])


def test_estimates_follow_every_change_of_the_counts() -> None:
    """The pooled estimates are kept between changes: each way of learning renews them."""
    m = model()
    assert m.mean()[1] == pytest.approx(0.5)
    m.record("b", True)
    assert m.mean()[1] == pytest.approx((0.5 * 2 + 1) / 3)
    m.update(np.array([1]), np.array([0]), np.array([False]))
    assert m.mean()[1] == pytest.approx((0.5 * 2 + 1) / 4)
    assert m.estimate(np.array([0]), np.array([3]))[0] == pytest.approx(0.3)
    m.record("a", True, feature_bin=1)  # a's unseen bins start from a's new pooled estimate
    assert m.estimate(np.array([0]), np.array([3]))[0] == pytest.approx((0.3 * 2 + 1) / 3)
    m.load_snapshot(model().to_snapshot())
    assert m.mean().tolist() == pytest.approx([0.3, 0.5])
    with pytest.raises(ValueError):
        m.mean()[0] = 1.0  # shared until the next change: a caller cannot alter it


def test_snapshot_round_trip_and_layout_change() -> None:
    m = model()
    m.record("a", True, 4)
    m.record("b", False)
    data = msgpack.unpackb(msgpack.packb(m.to_snapshot()))
    again = PropensityModel.from_snapshot(data, ["a", "b"], ACTIONS, 2.0, 1,
                                          feature_cardinalities=(3, 2),
                                          action_features={"a": [0, 1]})
    assert np.array_equal(again.pos, m.pos) and np.array_equal(again.neg, m.neg)
    changed = PropensityModel(["a", "b"], ACTIONS, feature_cardinalities=(3,),
                              action_features={"a": [0]})
    assert changed.load_snapshot(data) == ["a"]  # a's features changed: it starts afresh
    assert changed.evidence("b") == (0.0, 1.0)


def test_invalid_construction() -> None:
    with pytest.raises(ValueError, match="out of range"):
        PropensityModel(["a"], ACTIONS, feature_cardinalities=(2,), action_features={"a": [3]})
    with pytest.raises(ValueError, match="feature bins"):
        PropensityModel(["a"], ACTIONS, feature_cardinalities=(100, 100),
                        action_features={"a": [0, 1]})


# -- outcomes -------------------------------------------------------------------------------
def test_outcomes_close_treatments_or_time_them_out() -> None:
    tracker = OutcomeTracker(OutcomeKinds(positive=("accepted", "clicked"),
                                          neutral=("delivered", "opened")))
    tracker.track("t1", "c1", "a", 0, timeout_s=10, feature_bin=2)
    tracker.track("t2", "c2", "a", 0, timeout_s=20)
    tracker.track("t3", "c3", "b", 0, timeout_s=5, holdout=True)
    assert tracker.observe("t1", "delivered", 1000) is None
    won = tracker.observe("t1", "clicked", 2000)
    assert won is not None and won.positive and won.feature_bin == 2
    assert won.seen == ("delivered", "clicked")
    assert tracker.observe("t1", "accepted", 3000) is None  # already closed
    assert tracker.observe("nope", "accepted", 3000) is None
    with pytest.raises(ValueError, match="unknown outcome kind"):
        tracker.observe("t2", "loved", 0)
    assert tracker.next_due_ms() == 5000
    assert [r.treatment_id for r in tracker.expire(19_999)] == ["t3"]
    late = tracker.expire(20_000)
    assert [(r.kind, r.positive, r.at_ms) for r in late] == [("ignored", False, 20_000)]
    assert len(tracker) == 0 and tracker.next_due_ms() is None


def test_tracker_is_bounded_and_snapshots() -> None:
    tracker = OutcomeTracker(max_pending=2)
    assert tracker.track("t1", "c", "a", 0, 10) is None
    tracker.track("t2", "c", "a", 0, 5)
    evicted = tracker.track("t3", "c", "a", 0, 50)
    assert evicted is not None and evicted.treatment_id == "t2" and evicted.kind == "ignored"
    tracker.observe("t1", "opened", 1)
    data = msgpack.unpackb(msgpack.packb(tracker.to_snapshot()))
    again = OutcomeTracker.from_snapshot(data)
    assert again.pending == tracker.pending and again.next_due_ms() == 10_000


def test_outcome_kinds_must_be_disjoint() -> None:
    with pytest.raises(ValueError):
        OutcomeKinds(positive=("accepted",), negative=("accepted",))
    with pytest.raises(ValueError):
        OutcomeKinds(neutral=("ignored",))


# -- simulation -------------------------------------------------------------------------------
def _bench() -> ModuleType:
    path = Path(__file__).resolve().parents[3] / "benchmarks" / "bench_propensity.py"
    spec = importlib.util.spec_from_file_location("bench_propensity", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_propensity"] = module
    spec.loader.exec_module(module)
    return module


def test_simulation_converges_and_beats_random_choice() -> None:
    result = _bench().simulate(rounds=120, customers=2000, batch=150, n_actions=5, seed=11)
    assert result.adaptive_rate > result.random_rate + 0.04
    assert result.adaptive_rate > 0.9 * result.oracle_rate
    assert result.weighted_error() < 0.02
    for cell in result.cells:
        if cell.observations >= 1000:
            assert cell.learned == pytest.approx(cell.true_rate, abs=0.04)
