"""Student's t distribution, as much of it as a trend's z-score on a short history needs.

A z-score against the mean and standard deviation of a few points is not a z-score against the
customer's true mean and spread: both are estimates, and with five points a move of "two
standard deviations" happens by chance four times as often as two true ones would (8.9 % of
normal noise, against 2.3 %). The new value's distance from the estimated mean, over the
sample standard deviation times ``sqrt(1 + 1/n)``, follows Student's t with ``n - 1`` degrees
of freedom; its quantile at the normal tail of ``z`` gives the bound that fires as rarely as
``z`` promises, whatever the history's length.

Pure and exact for integer degrees of freedom (Abramowitz and Stegun 26.7.3 and 26.7.4), with
Newton's method for the quantile; no SciPy. Tails are taken as one minus the central mass,
which doubles resolve to about 1e-15: ``MAX_Z`` keeps bounds well inside that.
"""

from __future__ import annotations

import math
from functools import lru_cache

MAX_Z = 6.0  # a normal tail of 1e-9


def normal_tail(z: float) -> float:
    """P(Z <= -z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def t_tail(t: float, dof: int) -> float:
    """P(T <= -t) for Student's T with ``dof`` (>= 1) degrees of freedom, ``t >= 0``."""
    theta = math.atan(t / math.sqrt(dof))
    c2 = math.cos(theta) ** 2
    term = total = 1.0
    if dof % 2:  # A&S 26.7.3
        for k in range(1, (dof - 1) // 2):
            term *= c2 * (2 * k) / (2 * k + 1)
            total += term
        inside = theta + (math.sin(theta) * math.cos(theta) * total if dof > 1 else 0.0)
        central = 2.0 / math.pi * inside
    else:  # A&S 26.7.4
        for k in range(1, dof // 2):
            term *= c2 * (2 * k - 1) / (2 * k)
            total += term
        central = math.sin(theta) * total
    return max(0.0, 0.5 * (1.0 - central))


def t_density(t: float, dof: int) -> float:
    log_norm = (math.lgamma((dof + 1) / 2) - math.lgamma(dof / 2)
                - 0.5 * math.log(dof * math.pi))
    return math.exp(log_norm - (dof + 1) / 2 * math.log1p(t * t / dof))


@lru_cache(maxsize=4096)
def t_bound(z: float, dof: int) -> float:
    """The ``t >= 0`` with ``P(T <= -t) = P(Z <= -z)``: as unusual under Student's t with
    ``dof`` degrees of freedom as ``z`` is under the normal (``z > 0``)."""
    if not 0 < z <= MAX_Z:
        raise ValueError(f"z must be above 0 and at most {MAX_Z}, not {z}")
    if dof < 1:
        raise ValueError(f"degrees of freedom must be at least 1, not {dof}")
    goal = normal_tail(z)
    # The tail is convex and falling for t > 0, and t's is heavier than the normal's, so
    # Newton's steps from t = z rise to the bound without passing it.
    t = z
    for _ in range(100):
        step = (t_tail(t, dof) - goal) / t_density(t, dof)
        t += step
        if step <= 1e-12 * t:
            break
    return t
