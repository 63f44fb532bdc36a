"""P×C×V×L over candidate sets with live levers and a propensity model learned online.

The arbitration actor owns the master ``Scorer``: it learns from outcomes and takes lever
changes. Each shard keeps a replica (``to_replica`` / ``load_replica``) that answers inbound
Decides and small decision turns without a remote call; the shard refreshes it when the
master's ``version`` moves. Budgets are not here: a reservation needs the one book the
arbitrator holds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .arbitration import ActionTable, CandidateSet, Verdict, arbitrate, candidate_index
from .models import Action
from .propensity import IntArray, PropensityModel

REPLICA_VERSION = 1


class Scorer:
    def __init__(self, actions: Mapping[str, Action], *, prior_strength: float,
                 feature_cardinalities: Sequence[int],
                 action_features: Mapping[str, Sequence[int]], explore: bool) -> None:
        self.table = ActionTable(actions)
        self.cardinalities = tuple(feature_cardinalities)
        self.propensity = PropensityModel(self.table.ids, actions, prior_strength=prior_strength,
                                          feature_cardinalities=self.cardinalities,
                                          action_features=action_features)
        self.explore = explore
        self.version = 0  # moves with every lever change and every learned batch

    def score(self, sets: Sequence[CandidateSet]) -> list[Verdict]:
        """Every set's candidates scored and ranked; P drawn by Thompson sampling when
        exploring, else its point estimate."""
        action_idx, set_idx = candidate_index(sets, self.table)
        rows = np.array([s.features or (0,) * len(self.cardinalities) for s in sets],
                        dtype=np.int64).reshape(len(sets), len(self.cardinalities))
        bins = self.propensity.bins_for(action_idx, rows[set_idx])
        p = self.propensity.estimate(action_idx, bins, sample=self.explore)
        return arbitrate(sets, self.table, p, per_candidate=True, index=(action_idx, set_idx))

    def learn(self, items: Sequence[Sequence[Any]]) -> int:
        """Outcomes ``[action_id, feature_row_code, positive]``; unknown actions are skipped.
        Return how many were learned."""
        known = [(self.table.index[a], code, bool(pos)) for a, code, pos in items
                 if a in self.table.index]
        if not known:
            return 0
        action_idx = np.array([k[0] for k in known], dtype=np.int64)
        rows = self._rows(np.array([k[1] for k in known], dtype=np.int64))
        self.propensity.update(action_idx, self.propensity.bins_for(action_idx, rows),
                               np.array([k[2] for k in known], dtype=bool))
        self.version += 1
        return len(known)

    def _rows(self, codes: IntArray) -> IntArray:
        """Feature-row codes (mixed radix) back to rows of bins."""
        if not self.cardinalities:
            return np.zeros((len(codes), 0), dtype=np.int64)
        return np.stack(np.unravel_index(codes, self.cardinalities), axis=1)

    def set_lever(self, action_id: str, lever: float) -> None:
        self.table.set_lever(action_id, lever)
        self.version += 1

    # -- replicas -------------------------------------------------------------------------
    def to_replica(self) -> dict[str, Any]:
        """Levers and learned counts as msgpack-ready plain data."""
        return {"v": REPLICA_VERSION, "version": self.version, "levers": self.table.levers(),
                "model": self.propensity.to_snapshot()}

    def load_replica(self, data: Mapping[str, Any]) -> None:
        """Take the master's levers and counts (actions this catalog lacks are ignored)."""
        if data.get("v") != REPLICA_VERSION:
            raise ValueError(f"scorer replica version {data.get('v')!r}, "
                             f"expected {REPLICA_VERSION}")
        for action_id, lever in data["levers"].items():
            if action_id in self.table.index:
                self.table.set_lever(action_id, float(lever))
        self.propensity.load_snapshot(data["model"])
        self.version = int(data["version"])
