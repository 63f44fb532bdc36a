"""Contact policy through the chain: caps in local calendar days, cooldown, suppression,
service issues, service/safety caps and the emergency bypass."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from shush.engine.arbitration import CandidateSet
from shush.engine.contact_history import Contact, ContactHistory
from shush.engine.models import Action
from shush.policies.chain import CustomerContext, PolicyChain
from shush.policies.contact import suppressed_until_ms
from shush.policies.policy_config import SuppressionRule, parse_policies

AMS = ZoneInfo("Europe/Amsterdam")
DAY_MS = 86_400_000

ACTIONS = {
    "loan": Action(id="loan", kind="marketing", channel="email", value=100),
    "card": Action(id="card", kind="marketing", channel="sms", value=50),
    "alert": Action(id="alert", kind="service", channel="sms", value=10),
    "storm": Action(id="storm", kind="service", channel="sms", value=10),
}
POLICIES: dict[str, Any] = {
    "contact": {
        "caps": [
            {"id": "marketing_week", "max_count": 2, "window_days": 7},
            {"id": "sms_day", "max_count": 1, "window_days": 1, "channel": "sms",
             "classes": ["marketing"]},
            {"id": "service_day", "max_count": 3, "window_days": 1, "classes": ["service"]},
            {"id": "all_hard", "max_count": 10, "window_days": 1, "hard": True,
             "classes": ["marketing", "service", "safety"]},
        ],
        "service_issue_when": "'card_declined' in moments",
    },
    "actions": {
        "loan": {"group": "credit", "cooldown_s": 3 * 86400,
                 "suppression": [{"outcome": "rejected", "count": 2, "within_days": 7,
                                  "suppress_days": 30, "scope": "group"}]},
        "card": {"group": "credit"},
        "storm": {"contact_class": "safety"},
    },
}


def ms(*args: int, tz: ZoneInfo = AMS) -> int:
    return int(datetime(*args, tzinfo=tz).timestamp() * 1000)  # type: ignore[misc]


def chain(policies: dict[str, Any] | None = None) -> PolicyChain:
    return PolicyChain(ACTIONS, parse_policies(policies or POLICIES, actions=ACTIONS))


def ctx(now_ms: int, history: ContactHistory | None = None, **kw: Any) -> CustomerContext:
    profile = kw.pop("profile", {"tz": "Europe/Amsterdam"})
    return CustomerContext("c1", now_ms, profile, history or ContactHistory(), **kw)


def sent(history: ContactHistory, c: PolicyChain, action_id: str, at_ms: int) -> str:
    tid = f"t{len(history)}"
    history.record_contact(c.contact(tid, action_id, at_ms))
    return tid


def removed(c: PolicyChain, context: CustomerContext, *ids: str) -> dict[str, str]:
    cset = CandidateSet("c1", ids, (1.0,) * len(ids), (None,) * len(ids))
    survivors, removals = c.run(cset, context)
    assert set(survivors.action_ids) | {r.action_id for r in removals} == set(ids)
    return {r.action_id: r.policy for r in removals}


def test_cap_reached_exactly_removes_the_next_one_only() -> None:
    c, h = chain(), ContactHistory()
    now = ms(2025, 3, 12, 10)  # a Wednesday
    sent(h, c, "loan", now - 5 * DAY_MS)
    assert removed(c, ctx(now, h), "loan") == {}  # 1 of 2: allowed
    sent(h, c, "loan", now - 4 * DAY_MS)
    gone = c.run(CandidateSet("c1", ("loan",), (1.0,), (None,)), ctx(now, h))[1]
    assert gone[0].policy == "contact_cap" and "2 of 2" in gone[0].reason


def test_week_window_counts_local_calendar_days() -> None:
    c, h = chain(), ContactHistory()
    now = ms(2025, 3, 12, 10)
    # window of 7 calendar days: from local midnight of Thursday 6 March
    sent(h, c, "loan", ms(2025, 3, 5, 23, 59))  # Wednesday before: outside
    sent(h, c, "loan", ms(2025, 3, 6, 0, 0))  # Thursday 00:00 local: inside
    assert removed(c, ctx(now, h), "loan") == {}
    sent(h, c, "card", ms(2025, 3, 11, 9))
    assert removed(c, ctx(now, h), "loan") == {"loan": "contact_cap"}


def test_day_window_follows_the_customers_time_zone() -> None:
    c, h = chain(), ContactHistory()
    # 23:30 UTC on 11 March is 00:30 on 12 March in Amsterdam
    sent(h, c, "card", ms(2025, 3, 11, 23, 30, tz=ZoneInfo("UTC")))
    now = ms(2025, 3, 12, 9)
    assert removed(c, ctx(now, h), "card") == {"card": "contact_cap"}  # same local day
    utc_customer = ctx(now, h, profile={"tz": "UTC"})
    assert removed(c, utc_customer, "card") == {}  # a day earlier in UTC


def test_a_bad_time_zone_in_the_profile_falls_back_to_the_default() -> None:
    c = chain()
    assert c.zone(ctx(0, profile={"tz": "Mars/Olympus"})) == ZoneInfo("UTC")


def test_service_and_safety_have_their_own_caps() -> None:
    c, h = chain(), ContactHistory()
    now = ms(2025, 3, 12, 10)
    sent(h, c, "card", now - 3_600_000)
    sent(h, c, "loan", now - 7_200_000)
    # marketing is capped (sms_day; loan also cools down), service is not
    assert removed(c, ctx(now, h), "card", "loan", "alert") == {
        "card": "contact_cap", "loan": "cooldown"}
    for k in range(3):
        sent(h, c, "alert", now - k * 60_000 - 1000)
    assert removed(c, ctx(now, h), "alert", "storm") == {"alert": "contact_cap"}


def test_emergency_bypass_skips_soft_caps_but_not_hard_caps_or_consent() -> None:
    c, h = chain(), ContactHistory()
    now = ms(2025, 3, 12, 10)
    for k in range(3):
        sent(h, c, "alert", now - k * 60_000 - 1000)
    emergency = ctx(now, h, trigger="emergency", emergency_bypass=True)
    assert removed(c, emergency, "alert") == {}
    assert removed(c, ctx(now, h, trigger="emergency"), "alert") == {"alert": "contact_cap"}
    assert removed(c, ctx(now, h, emergency_bypass=True), "alert") == {"alert": "contact_cap"}
    for k in range(7):
        sent(h, c, "storm", now - k * 60_000 - 500)
    assert removed(c, emergency, "storm") == {"storm": "contact_cap"}  # the hard cap holds
    dnc = ctx(now, ContactHistory(), trigger="emergency", emergency_bypass=True,
              profile={"do_not_contact": True})
    assert removed(c, dnc, "alert") == {"alert": "consent"}


def test_cooldown_boundary() -> None:
    c, h = chain(), ContactHistory()
    start = ms(2025, 3, 1, 12)
    sent(h, c, "loan", start)
    assert removed(c, ctx(start + 3 * DAY_MS - 1, h), "loan") == {"loan": "cooldown"}
    assert removed(c, ctx(start + 3 * DAY_MS, h), "loan") == {}


def test_rejects_of_the_group_suppress_the_action() -> None:
    c, h = chain(), ContactHistory()
    t0 = ms(2025, 2, 1, 12)
    h.record_outcome(sent(h, c, "card", t0), "rejected", t0 + 1000)
    later = t0 + 6 * DAY_MS
    h.record_outcome(sent(h, c, "card", later), "rejected", later + 1000)
    gone = c.run(CandidateSet("c1", ("loan",), (1.0,), (None,)), ctx(later + DAY_MS, h))[1]
    assert gone[0].policy == "suppression" and "group 'credit'" in gone[0].reason
    assert removed(c, ctx(later + 1000 + 30 * DAY_MS, h), "loan") == {}  # suppression over


def test_suppression_trigger_needs_the_outcomes_within_the_window() -> None:
    rule = SuppressionRule(outcome="ignored", count=3, within_days=7, suppress_days=10)
    assert suppressed_until_ms(rule, [0, 5 * DAY_MS]) is None
    assert suppressed_until_ms(rule, [0, 3 * DAY_MS, 7 * DAY_MS + 1]) is None
    assert suppressed_until_ms(rule, [0, 3 * DAY_MS, 7 * DAY_MS]) == 17 * DAY_MS


def test_default_rules_suppress_after_ignored_impressions() -> None:
    c, h = chain({"actions": {}}), ContactHistory()
    t = ms(2025, 2, 1, 12)
    for k in range(5):
        h.record_outcome(sent(h, c, "alert", t + k * DAY_MS), "ignored", t + k * DAY_MS + 10)
    assert removed(c, ctx(t + 5 * DAY_MS, h), "alert", "loan") == {"alert": "suppression"}


def test_no_marketing_while_a_service_issue_is_open() -> None:
    c = chain()
    now = ms(2025, 3, 12, 10)
    assert removed(c, ctx(now, open_service_issues=("ticket-9",)), "loan", "alert") == {
        "loan": "service_issue"}
    namespace = {"moments": {"card_declined"}, "profile": {}}
    assert removed(c, ctx(now, namespace=namespace), "card", "alert") == {"card": "service_issue"}
    assert removed(c, ctx(now, namespace={"moments": set()}), "card") == {}


@pytest.mark.parametrize("bypass", [True, False])
def test_reasons_are_readable(bypass: bool) -> None:
    c, h = chain(), ContactHistory()
    now = ms(2025, 3, 12, 10)
    sent(h, c, "card", now - 1000)
    survivors, gone = c.run(CandidateSet("c1", ("card", "alert"), (0.5, 1.0), ("m", None)),
                            ctx(now, h, trigger="emergency", emergency_bypass=bypass))
    if bypass:
        assert gone == [] and survivors.contexts == (0.5, 1.0)
    else:
        assert survivors.action_ids == ("alert",) and survivors.moment_ids == (None,)
        assert gone[0].reason.startswith("cap 'sms_day' reached: 1 of 1 marketing contacts on sms")


def test_contact_entry_carries_class_and_group() -> None:
    c = chain()
    entry = c.contact("t1", "storm", 5)
    assert entry == Contact("t1", "storm", "sms", "safety", 5, None)
    assert c.contact("t2", "loan", 5).group == "credit"
