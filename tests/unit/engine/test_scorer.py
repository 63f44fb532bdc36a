"""The scorer and its replica: a shard's copy answers as the arbitrator's master does."""

from __future__ import annotations

from pathlib import Path

import pytest

from shush.engine.arbitration import CandidateSet
from shush.engine.catalog import Catalog, load_catalog
from shush.engine.scorer import Scorer
from tests.factories import write_catalog


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    return load_catalog([write_catalog(tmp_path)])


def _scorer(catalog: Catalog) -> Scorer:
    return Scorer(catalog.actions, prior_strength=2.0, feature_cardinalities=(),
                  action_features={}, explore=False)


SETS = [CandidateSet("c1", ("advisor_call", "rate_offer"), (0.8, 0.8), ("m", "m")),
        CandidateSet("c2", ("card_upgrade",), (1.0,), (None,))]


def test_levers_and_learning_move_the_version_and_reach_a_replica(catalog: Catalog) -> None:
    master, replica = _scorer(catalog), _scorer(catalog)
    master.set_lever("rate_offer", 2.0)
    assert master.learn([["advisor_call", 0, False]] * 6 + [["no_such_action", 0, True]]) == 6
    assert master.version == 2
    assert replica.score(SETS) != master.score(SETS)
    replica.load_replica(master.to_replica())
    assert replica.score(SETS) == master.score(SETS)
    assert replica.version == 2 and replica.table.levers()["rate_offer"] == 2.0
    [first, _] = master.score(SETS)
    assert first.winner == "rate_offer"  # 0.4 × 0.8 × 50 × 2 beats the unlearned advisor call


def test_a_replica_of_another_format_is_refused(catalog: Catalog) -> None:
    with pytest.raises(ValueError, match="replica version"):
        _scorer(catalog).load_replica({"v": 99})
