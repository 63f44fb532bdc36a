"""The trend's bound on short histories: Student's t, and a z-score that fires as rarely as
its threshold says whatever the history's length."""

from __future__ import annotations

import math
from array import array
from statistics import NormalDist

import numpy as np
import pytest

from shush.engine.detectors.runtime import runtime
from shush.engine.detectors.student_t import normal_tail, t_bound, t_tail
from shush.engine.detectors.trend import TrendDetector


@pytest.mark.parametrize(("p", "dof", "quantile"), [
    (0.95, 1, 6.313752), (0.95, 2, 2.919986), (0.995, 3, 5.840909), (0.975, 4, 2.776445),
    (0.975, 10, 2.228139), (0.975, 29, 2.045230), (0.95, 120, 1.657651),
])
def test_bound_is_the_t_quantile_of_tables(p: float, dof: int, quantile: float) -> None:
    z = NormalDist().inv_cdf(p)
    assert t_bound(z, dof) == pytest.approx(quantile, abs=1e-6)
    assert t_tail(quantile, dof) == pytest.approx(1 - p, rel=1e-5)


def test_bound_tends_to_z_and_refuses_what_doubles_cannot_resolve() -> None:
    assert t_bound(2.0, 100_000) == pytest.approx(2.0, abs=1e-4)
    assert t_bound(6.0, 1) == pytest.approx(1 / (math.pi * normal_tail(6.0)), rel=1e-6)
    for z, dof in ((0.0, 3), (6.5, 3), (2.0, 0)):
        with pytest.raises(ValueError):
            t_bound(z, dof)


@pytest.mark.parametrize("n", [3, 5, 10, 30])
def test_zscore_fires_on_normal_noise_as_often_as_its_threshold_says(n: int) -> None:
    """2.3 % for z = 2 with any number of values (the plain z-score's bound fired on 8.9 %
    of such noise with 5 values, 3.2 % with 30)."""
    detector = runtime(TrendDetector(id="t", signal="a", attribute="x", z_threshold=2.0,
                                     points=n, min_points=n, moment="m"))
    rng = np.random.default_rng(n)
    trials = 20_000
    history = rng.normal(50.0, 7.0, (trials, n))
    new = rng.normal(50.0, 7.0, trials).tolist()
    sums, squares = history.sum(axis=1).tolist(), (history ** 2).sum(axis=1).tolist()
    fired = 0
    for i, row in enumerate(history.tolist()):
        state = {"buf": array("d", row), "s": sums[i], "ss": squares[i]}
        fired += bool(detector._zscore(state, new[i]))
    expected = normal_tail(2.0)
    spread = math.sqrt(expected * (1 - expected) / trials)
    assert abs(fired / trials - expected) < 4 * spread


def test_a_history_longer_than_points_after_a_catalog_change_still_counts() -> None:
    """A catalog that lowers ``points`` (same version) leaves each customer's window as long
    as it was: the bound for its length is there, and a drop still fires."""
    detector = runtime(TrendDetector(id="t", signal="a", attribute="x", z_threshold=2.0,
                                     points=10, min_points=5, moment="m"))
    values = [100.0 + (i % 3) for i in range(40)]
    state = {"buf": array("d", values), "s": sum(values), "ss": sum(v * v for v in values)}
    assert detector._zscore(state, 101.0) is False
    assert detector._zscore(state, 80.0) is True
    assert len(state["buf"]) == 40
