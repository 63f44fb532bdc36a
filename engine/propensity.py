"""Adaptive propensity P: Beta counts per action and per bin of a few declared context features.

Every action starts at its ``prior_propensity`` ``p0`` backed by ``prior_strength`` pseudo
observations ``e0`` (little evidence), so a new action earns its place. Outcomes add positive or
negative counts. With ``pos``/``neg`` counts, the estimate and its evidence are::

    p = (p0·e0 + pos) / (e0 + pos + neg)        evidence = e0 + pos + neg

``mean`` returns ``p``; Thompson sampling draws from ``Beta(1 + p·evidence, 1 + (1 - p)·evidence)``.

Context features: the model knows each feature only by its number of bins (the binning of
profile/state values lives in ``policies.features``). An action uses a subset of the features;
its bin is the mixed-radix index of the customer's bins of those features (0 if it uses none).
A bin's prior is the action's pooled estimate (over all its bins) rather than ``p0``, so a
rarely seen bin starts where the action as a whole stands.

Scoring is vectorized: ``estimate(action_idx, feature_bins, sample)`` gives P per candidate;
``table(customer_bins, sample)`` gives P for every action for one customer (the shape
``engine.arbitration.arbitrate`` takes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from math import prod
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from .models import Action

SNAPSHOT_VERSION: Final = 1
MAX_BINS_PER_ACTION: Final = 4096

__all__ = ["MAX_BINS_PER_ACTION", "PropensityModel"]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


class PropensityModel:
    def __init__(self, action_ids: Sequence[str], actions: Mapping[str, Action],
                 prior_strength: float = 2.0, seed: int | None = None, *,
                 feature_cardinalities: Sequence[int] = (),
                 action_features: Mapping[str, Sequence[int]] | None = None) -> None:
        """``feature_cardinalities[f]``: bins of feature f; ``action_features[a]``: indexes
        of the features action ``a`` is learned by (none if absent)."""
        if prior_strength <= 0:
            raise ValueError(f"prior_strength must be > 0, got {prior_strength}")
        self.ids = list(action_ids)
        self.index = {a: i for i, a in enumerate(self.ids)}
        self.prior_strength = float(prior_strength)
        self.cardinalities = tuple(int(c) for c in feature_cardinalities)
        if any(c < 1 for c in self.cardinalities):
            raise ValueError(f"every feature needs at least one bin: {self.cardinalities}")
        n_features = len(self.cardinalities)
        self.prior: FloatArray = np.array([actions[a].prior_propensity for a in self.ids],
                                          dtype=np.float64)
        self.strides: IntArray = np.zeros((len(self.ids), max(n_features, 1)), dtype=np.int64)
        self.layouts: dict[str, tuple[int, ...]] = {}
        features = action_features or {}
        for a, i in self.index.items():
            used = sorted(set(features.get(a, ())))
            if any(not 0 <= f < n_features for f in used):
                raise ValueError(f"action {a!r} names a feature index out of range: {used}")
            stride = 1
            for f in used:
                self.strides[i, f] = stride
                stride *= self.cardinalities[f]
            if stride > MAX_BINS_PER_ACTION:
                raise ValueError(f"action {a!r} would have {stride} feature bins "
                                 f"(limit {MAX_BINS_PER_ACTION}); bin coarser or use fewer")
            self.layouts[a] = tuple(self.cardinalities[f] for f in used)
        self.has_features = np.array([bool(self.layouts[a]) for a in self.ids], dtype=bool)
        n_bins = max((prod(lay) for lay in self.layouts.values()), default=1)
        self.pos: FloatArray = np.zeros((len(self.ids), n_bins), dtype=np.float64)
        self.neg: FloatArray = np.zeros((len(self.ids), n_bins), dtype=np.float64)
        self._rng = np.random.default_rng(seed)
        # the pooled estimates, kept until the counts change (``_pooled``): every score reads
        # them, and summing the counts each time was a fixed cost of every Decide (stop 43)
        self._pooled_now: tuple[FloatArray, FloatArray, FloatArray] | None = None

    # -- learning -------------------------------------------------------------------------
    def bins_for(self, action_idx: IntArray, customer_bins: IntArray) -> IntArray:
        """Each candidate's bin: ``customer_bins`` is (n, n_features), one row per candidate."""
        if not self.cardinalities:
            return np.zeros(len(action_idx), dtype=np.int64)
        result: IntArray = (np.asarray(customer_bins, dtype=np.int64)
                            * self.strides[action_idx]).sum(axis=1)
        return result

    def record(self, action_id: str, positive: bool, feature_bin: int = 0) -> None:
        i = self.index[action_id]
        if positive:
            self.pos[i, feature_bin] += 1.0
        else:
            self.neg[i, feature_bin] += 1.0
        self._pooled_now = None

    def update(self, action_idx: IntArray, feature_bins: IntArray,
               positive: NDArray[np.bool_]) -> None:
        """Learn a batch of outcomes at once."""
        positive = np.asarray(positive, dtype=bool)
        np.add.at(self.pos, (action_idx[positive], feature_bins[positive]), 1.0)
        np.add.at(self.neg, (action_idx[~positive], feature_bins[~positive]), 1.0)
        self._pooled_now = None

    # -- estimates ------------------------------------------------------------------------
    def _pooled(self) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Per action: the pooled estimate, its evidence, and the prior of one of its bins
        (the pooled estimate for an action learned by features, else ``p0``). Read-only:
        kept until the counts change."""
        if self._pooled_now is None:
            pos = self.pos.sum(axis=1)
            e0 = self.prior_strength
            evidence = e0 + (pos + self.neg.sum(axis=1))
            pooled = (self.prior * e0 + pos) / evidence
            bin_prior = np.where(self.has_features, pooled, self.prior)
            for array in (pooled, evidence, bin_prior):
                array.setflags(write=False)
            self._pooled_now = (pooled, evidence, bin_prior)
        return self._pooled_now

    def _draw(self, p: FloatArray, evidence: FloatArray) -> FloatArray:
        result: FloatArray = self._rng.beta(1.0 + p * evidence, 1.0 + (1.0 - p) * evidence)
        return result

    def mean(self) -> FloatArray:
        """P per action (pooled over its bins), in ``ids`` order."""
        return self._pooled()[0]

    def sample(self) -> FloatArray:
        """A Thompson draw of P per action (pooled over its bins)."""
        pooled, evidence, _ = self._pooled()
        return self._draw(pooled, evidence)

    def estimate(self, action_idx: IntArray, feature_bins: IntArray,
                 sample: bool = False) -> FloatArray:
        """P per candidate (action index, bin): the point estimate, or a Thompson draw."""
        action_idx = np.asarray(action_idx, dtype=np.int64)
        feature_bins = np.asarray(feature_bins, dtype=np.int64)
        prior = self._pooled()[2][action_idx]
        pos = self.pos[action_idx, feature_bins]
        n = pos + self.neg[action_idx, feature_bins]
        e0 = self.prior_strength
        p: FloatArray = (prior * e0 + pos) / (e0 + n)
        return self._draw(p, e0 + n) if sample else p

    def table(self, customer_bins: Sequence[int] | IntArray, sample: bool = False) -> FloatArray:
        """P of every action (``ids`` order) for one customer's feature bins."""
        idx = np.arange(len(self.ids), dtype=np.int64)
        rows = np.broadcast_to(np.asarray(customer_bins, dtype=np.int64),
                               (len(self.ids), len(self.cardinalities)))
        return self.estimate(idx, self.bins_for(idx, rows), sample)

    def evidence(self, action_id: str) -> tuple[float, float]:
        """(positives, negatives) learned for an action, over all its bins."""
        i = self.index[action_id]
        return float(self.pos[i].sum()), float(self.neg[i].sum())

    # -- snapshots ------------------------------------------------------------------------
    def to_snapshot(self) -> dict[str, Any]:
        """Counts per action with its bin layout: msgpack-ready plain data."""
        actions = {}
        for a, i in self.index.items():
            n_bins = prod(self.layouts[a])
            actions[a] = {"layout": list(self.layouts[a]), "pos": self.pos[i, :n_bins].tolist(),
                          "neg": self.neg[i, :n_bins].tolist()}
        return {"v": SNAPSHOT_VERSION, "actions": actions}

    @classmethod
    def from_snapshot(cls, data: Mapping[str, Any], action_ids: Sequence[str],
                      actions: Mapping[str, Action], prior_strength: float = 2.0,
                      seed: int | None = None, *, feature_cardinalities: Sequence[int] = (),
                      action_features: Mapping[str, Sequence[int]] | None = None,
                      ) -> PropensityModel:
        """A model for the current catalog, with the saved counts that still fit it."""
        model = cls(action_ids, actions, prior_strength, seed,
                    feature_cardinalities=feature_cardinalities, action_features=action_features)
        model.load_snapshot(data)
        return model

    def load_snapshot(self, data: Mapping[str, Any]) -> list[str]:
        """Restore the counts of actions whose bin layout is unchanged; return the ids of
        actions that start afresh (new, or their features changed). Unknown ids are dropped."""
        if data.get("v") != SNAPSHOT_VERSION:
            raise ValueError(f"propensity snapshot version {data.get('v')!r}, "
                             f"expected {SNAPSHOT_VERSION}")
        saved: Mapping[str, Any] = data["actions"]
        fresh = []
        for a, i in self.index.items():
            entry = saved.get(a)
            if entry is None or tuple(entry["layout"]) != self.layouts[a]:
                fresh.append(a)
                continue
            n_bins = prod(self.layouts[a])
            self.pos[i, :n_bins] = np.asarray(entry["pos"], dtype=np.float64)
            self.neg[i, :n_bins] = np.asarray(entry["neg"], dtype=np.float64)
        self._pooled_now = None
        return fresh
