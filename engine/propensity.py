"""Propensity P per action: a Beta posterior starting at the action's prior.

With no outcomes yet, P is the declared prior. Outcomes (positive/negative) move it; the
posterior mean is the point estimate and ``sample`` draws from it for exploration.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .models import Action


class PropensityModel:
    def __init__(self, action_ids: Sequence[str], actions: Mapping[str, Action],
                 prior_strength: float = 2.0, seed: int | None = None) -> None:
        self.ids = list(action_ids)
        self.index = {a: i for i, a in enumerate(self.ids)}
        prior = np.array([actions[a].prior_propensity for a in self.ids], dtype=np.float64)
        self.alpha = prior * prior_strength
        self.beta = (1.0 - prior) * prior_strength
        self._rng = np.random.default_rng(seed)

    def record(self, action_id: str, positive: bool) -> None:
        i = self.index[action_id]
        if positive:
            self.alpha[i] += 1.0
        else:
            self.beta[i] += 1.0

    def mean(self) -> np.ndarray:
        result: np.ndarray = self.alpha / (self.alpha + self.beta)
        return result

    def sample(self) -> np.ndarray:
        result: np.ndarray = self._rng.beta(self.alpha, self.beta)
        return result
