"""A customer forgets a moment once a later one of the same name outranks it for good, and
what a decision chooses never changes for it."""

from __future__ import annotations

import random

from shush.engine.customer import CustomerState
from shush.engine.models import Moment
from tests.unit.engine.detectors.detector_kit import DAY, HOUR, T0


def moment(name: str, at_ms: int, *, urgency: float = 0.8, half_life_s: float = 86_400.0,
           ttl_s: float = 7 * 86_400.0, tag: str = "") -> Moment:
    return Moment(f"{name}@{at_ms}{tag}", name, "cust", at_ms, urgency, half_life_s, ttl_s,
                  name, (f"e{at_ms}",))


def customer_with(*moments: Moment) -> CustomerState:
    customer = CustomerState("cust")
    customer.moments = list(moments)
    return customer


def test_a_later_moment_of_the_same_name_replaces_the_earlier_one() -> None:
    first, second = moment("low_balance", T0), moment("low_balance", T0 + HOUR)
    other = moment("big_withdrawal", T0)
    customer = customer_with(first, other, second)
    assert customer.current_moments(T0 + 2 * HOUR) == [other, second]
    assert customer.moments == [other, second]  # forgotten, not only hidden


def test_an_earlier_moment_that_may_still_win_is_kept() -> None:
    now = T0 + 2 * HOUR
    for later in (moment("m", T0 + HOUR, urgency=0.5),  # less urgent
                  moment("m", T0 + HOUR, half_life_s=3_600.0),  # decays faster
                  moment("m", T0 + HOUR, ttl_s=2 * 86_400.0),  # ends sooner
                  moment("m", T0 - HOUR)):  # came in later, happened earlier (a late event)
        earlier = moment("m", T0, tag="-earlier")
        assert customer_with(earlier, later).current_moments(now) == [earlier, later]


def test_expired_moments_go_as_before() -> None:
    old = moment("m", T0, ttl_s=60.0)
    assert customer_with(old).current_moments(T0 + HOUR) == []


def _chosen(moments: list[Moment], name: str, at_ms: int) -> Moment | None:
    """What candidates take for an action naming ``name``: the most relevant live moment, the
    later one on a tie (``policies.candidates.build_candidates``)."""
    best, best_relevance = None, 0.0
    for m in moments:
        relevance = m.relevance(at_ms)
        if m.name == name and relevance > 0.0 and relevance >= best_relevance:
            best, best_relevance = m, relevance
    return best


def test_forgetting_never_changes_what_a_decision_chooses_then_or_later() -> None:
    rng = random.Random(11)
    for trial in range(400):
        moments = [moment(rng.choice("ab"), T0 + rng.randrange(0, 3 * DAY, HOUR),
                          urgency=rng.choice((0.5, 0.8)), half_life_s=rng.choice((3e4, 9e4)),
                          ttl_s=rng.choice((2 * 86_400.0, 5 * 86_400.0)), tag=f"-{i}")
                   for i in range(rng.randint(1, 8))]
        now = T0 + rng.randrange(0, 4 * DAY, HOUR)
        customer = customer_with(*moments)
        kept = customer.current_moments(now)
        for later in range(now, now + 8 * DAY, 6 * HOUR):
            for name in "ab":
                assert _chosen(kept, name, later) == _chosen(moments, name, later), \
                    (trial, name, later)


def test_a_forgotten_moment_takes_its_treatment_keys_along() -> None:
    first, second = moment("low_balance", T0), moment("low_balance", T0 + HOUR)
    other = moment("big_withdrawal", T0)
    customer = customer_with(first, other, second)
    for m in (first, other, second):
        customer.mark_treated(f"cust|alert|{m.moment_id}", T0 + DAY)
    customer.mark_treated("cust|alert|inbound", T0 + DAY)
    customer.current_moments(T0 + 2 * HOUR)
    assert set(customer.treated) == {f"cust|alert|{other.moment_id}",
                                     f"cust|alert|{second.moment_id}", "cust|alert|inbound"}
