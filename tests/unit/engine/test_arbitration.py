from __future__ import annotations

import numpy as np
import pytest

from shush.engine.arbitration import ActionTable, CandidateSet, arbitrate, explain, score
from shush.engine.models import Action
from shush.engine.propensity import PropensityModel


def _actions() -> dict[str, Action]:
    return {
        "a": Action(id="a", kind="marketing", channel="email", value=100, prior_propensity=0.3),
        "b": Action(id="b", kind="marketing", channel="email", value=50, prior_propensity=0.6),
        "c": Action(id="c", kind="service", channel="sms", value=10, lever=2.0,
                    prior_propensity=0.5),
    }


def test_score_keeps_every_factor() -> None:
    candidate = score("a", "m1", p=0.5, c=0.8, v=100, lever=1.5)
    assert candidate.score == pytest.approx(60.0)
    assert (candidate.p, candidate.c, candidate.v, candidate.l) == (0.5, 0.8, 100, 1.5)
    assert explain(candidate) == "P 0.50 × C 0.80 × V 100 × L 1.50 = 60.00"


def test_batch_matches_the_single_candidate_formula() -> None:
    actions = _actions()
    table = ActionTable(actions)
    model = PropensityModel(table.ids, actions)
    sets = [CandidateSet("x", ("a", "b", "c"), (1.0, 1.0, 0.5), ("m", "m", "n")),
            CandidateSet("y", ("c",), (0.25,), ("n",)), CandidateSet("z", (), (), ())]
    verdicts = arbitrate(sets, table, model.mean())
    x = verdicts[0]
    assert [c.action_id for c in x.candidates] == ["a", "b", "c"]
    for cand in x.candidates:
        expected = score(cand.action_id, cand.moment_id, model.mean()[table.index[cand.action_id]],
                         cand.c, actions[cand.action_id].value, table.lever[
                             table.index[cand.action_id]])
        assert cand.score == pytest.approx(expected.score)
    assert x.winner == "a"  # a: 0.3 × 100 = 30 ties b: 0.6 × 50 = 30; the id breaks it
    assert verdicts[1].winner == "c" and verdicts[1].candidates[0].score == pytest.approx(2.5)
    assert verdicts[2].winner is None and verdicts[2].candidates == ()


def test_ties_break_by_action_id_whatever_the_input_order() -> None:
    table = ActionTable(_actions())
    p = np.array([0.5, 0.5, 0.5])
    table.lever[:] = [1.0, 2.0, 1.0]  # a: 0.5 × 100 × 1 = 50, b: 0.5 × 50 × 2 = 50
    one = arbitrate([CandidateSet("x", ("b", "a"), (1.0, 1.0), (None, None))], table, p)
    two = arbitrate([CandidateSet("x", ("a", "b"), (1.0, 1.0), (None, None))], table, p)
    assert one[0].winner == two[0].winner == "a"


def test_lever_flips_the_winner() -> None:
    actions = _actions()
    table = ActionTable(actions)
    p = PropensityModel(table.ids, actions).mean()
    sets = [CandidateSet("x", ("a", "b"), (1.0, 1.0), (None, None))]
    assert arbitrate(sets, table, p)[0].winner == "a"
    table.set_lever("b", 2.0)
    assert arbitrate(sets, table, p)[0].winner == "b"


def test_zero_score_has_no_winner() -> None:
    table = ActionTable(_actions())
    table.set_lever("a", 0.0)
    verdict = arbitrate([CandidateSet("x", ("a",), (1.0,), (None,))], table, np.ones(3))[0]
    assert verdict.winner is None


def test_propensity_starts_at_the_prior_and_learns() -> None:
    actions = _actions()
    model = PropensityModel(sorted(actions), actions, prior_strength=2.0, seed=1)
    assert model.mean().tolist() == pytest.approx([0.3, 0.6, 0.5])
    for _ in range(98):
        model.record("a", positive=True)
    assert model.mean()[0] == pytest.approx((0.6 + 98) / 100)
    assert ((model.sample() >= 0) & (model.sample() <= 1)).all()


def test_an_action_competing_per_channel_wins_its_channel_besides_the_main_winner() -> None:
    actions = {
        "offer": Action(id="offer", kind="marketing", channel="email", value=100),
        "rival": Action(id="rival", kind="marketing", channel="sms", value=80),
        "banner": Action(id="banner", kind="marketing", channel="web", value=10,
                         compete_per_channel=True),
        "banner_b": Action(id="banner_b", kind="marketing", channel="web", value=5,
                           compete_per_channel=True),
    }
    table = ActionTable(actions)
    p = PropensityModel(table.ids, actions).mean()
    [verdict] = arbitrate([CandidateSet("x", tuple(actions), (1.0,) * 4, (None,) * 4)], table, p)
    assert verdict.winner == "offer"  # the main competition: offer beats rival
    assert verdict.also == ("banner",)  # the web slot has its own, and banner beats banner_b
    [only] = arbitrate([CandidateSet("y", ("banner_b",), (1.0,), (None,))], table, p)
    assert (only.winner, only.also) == ("banner_b", ())
