"""The one way an actor builds its ``Scorer`` from the catalog, its policies and the config: the
arbitrator's master and every shard's replica must agree on actions and feature layouts."""

from __future__ import annotations

from ..engine.catalog import Catalog
from ..engine.config import ArbitrationConfig
from ..engine.scorer import Scorer
from ..policies.features import propensity_features
from ..policies.policy_config import PolicyCatalog


def scorer_for(catalog: Catalog, policy: PolicyCatalog, config: ArbitrationConfig) -> Scorer:
    ids = sorted(catalog.actions)
    cardinalities, per_action = propensity_features(policy, ids)
    return Scorer(catalog.actions, prior_strength=config.prior_strength,
                  feature_cardinalities=cardinalities, action_features=per_action,
                  explore=config.explore)
