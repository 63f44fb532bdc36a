"""Consent (at decision and again before a send) and quiet hours in the customer's zone."""

from __future__ import annotations

from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from shush.engine.contact_history import ContactHistory
from shush.engine.models import Action
from shush.policies.chain import CustomerContext, PolicyChain
from shush.policies.consent import ConsentPolicy, ConsentRecord
from shush.policies.policy_config import ConsentConfig, QuietHoursRule, parse_policies
from shush.policies.quiet_hours import QuietHoursPolicy, quiet_until_ms

AMS = ZoneInfo("Europe/Amsterdam")
NY = ZoneInfo("America/New_York")
NIGHT = QuietHoursRule(start=time(21), end=time(8))


def ms(*args: int, tz: ZoneInfo = AMS) -> int:
    return int(datetime(*args, tzinfo=tz).timestamp() * 1000)  # type: ignore[misc]


def local(at_ms: int, tz: ZoneInfo = AMS) -> datetime:
    return datetime.fromtimestamp(at_ms / 1000, tz=tz)


# -- consent ----------------------------------------------------------------------------------
def test_do_not_contact_and_opt_outs() -> None:
    policy = ConsentPolicy()
    assert policy.check(ConsentRecord(), "sms", "marketing") is None
    assert "do-not-contact" in (policy.check(ConsentRecord(True), "sms", "service") or "")
    record = ConsentRecord()
    record.set("email:marketing", False)
    assert policy.check(record, "email", "marketing") is not None
    assert policy.check(record, "email", "service") is None
    assert policy.check(record, "email", "safety") is None
    record.set("*:marketing", False)
    assert "*:marketing" in (policy.check(record, "sms", "marketing") or "")
    record.set("email:marketing", True)  # a narrower opt-in never beats a broader opt-out
    assert policy.check(record, "email", "marketing") is not None


def test_required_opt_in() -> None:
    policy = ConsentPolicy(ConsentConfig(require_opt_in=("sms:marketing",)))
    record = ConsentRecord()
    assert "no opt-in" in (policy.check(record, "sms", "marketing") or "")
    assert policy.check(record, "sms", "service") is None
    record.set("sms", True)
    assert policy.check(record, "sms", "marketing") is None


def test_consent_from_profile_and_snapshot() -> None:
    flat = ConsentRecord.from_profile({"consent_sms": False, "consent_email_marketing": True,
                                       "consent_all_marketing": "opt_out", "age": 3})
    assert flat.opted_out == {"sms", "*:marketing"} and flat.opted_in == {"email:marketing"}
    nested = ConsentRecord.from_profile({"consent": {"push": False}, "do_not_contact": True})
    assert nested.do_not_contact and nested.opted_out == {"push"}
    assert ConsentRecord.from_snapshot(flat.to_snapshot()) == flat


def test_opt_out_between_decision_and_send() -> None:
    actions = {"offer": Action(id="offer", kind="marketing", channel="sms", value=1)}
    chain = PolicyChain(actions, parse_policies(
        {"quiet_hours": [{"start": "21:00", "end": "08:00"}]}, actions=actions))
    profile: dict[str, Any] = {"tz": "Europe/Amsterdam"}
    decided = ms(2025, 6, 3, 3)
    at_decision = CustomerContext("c1", decided, profile, ContactHistory())
    assert chain.check("offer", at_decision) is None
    plan = chain.send_plan("offer", at_decision)
    assert not plan.send_now and local(plan.at_ms).hour == 8
    profile["consent_sms"] = False  # the opt-out signal arrives while the send waits
    at_send = CustomerContext("c1", plan.at_ms, profile, ContactHistory())
    removal = chain.recheck_before_send("offer", at_send)
    assert removal is not None and removal.policy == "consent"


# -- quiet hours ------------------------------------------------------------------------------
@pytest.mark.parametrize(("hour", "minute", "expected"), [
    (20, 59, None),  # before quiet hours: send now
    (21, 0, (4, 8)),  # at the start: tomorrow 08:00
    (23, 30, (4, 8)),
    (3, 0, (3, 8)),  # after midnight: today 08:00
    (7, 59, (3, 8)),
    (8, 0, None),  # the end is exclusive
])
def test_quiet_hours_across_midnight(hour: int, minute: int,
                                     expected: tuple[int, int] | None) -> None:
    at = quiet_until_ms([NIGHT], ms(2025, 6, 3, hour, minute), AMS)
    if expected is None:
        assert at is None
    else:
        assert (local(at).day, local(at).hour, local(at).minute) == (*expected, 0)


def test_same_day_quiet_hours() -> None:
    lunch = QuietHoursRule(start=time(12), end=time(13, 30))
    at = quiet_until_ms([lunch], ms(2025, 6, 3, 12, 10), AMS)
    assert at == ms(2025, 6, 3, 13, 30)
    assert quiet_until_ms([lunch], ms(2025, 6, 3, 13, 30), AMS) is None


def test_quiet_hours_across_spring_forward() -> None:
    # Amsterdam: 30 March 2025, 02:00 -> 03:00. 8 a.m. local is 06:00 UTC (was 07:00 UTC)
    at = quiet_until_ms([NIGHT], ms(2025, 3, 29, 23), AMS)
    assert at is not None and local(at).hour == 8 and local(at).day == 30
    assert at == int(datetime(2025, 3, 30, 6, tzinfo=ZoneInfo("UTC")).timestamp() * 1000)
    assert at - ms(2025, 3, 29, 23) == 8 * 3_600_000  # one hour shorter night


def test_quiet_hours_across_fall_back() -> None:
    # New York: 2 November 2025, 02:00 -> 01:00; the night is one hour longer
    at = quiet_until_ms([NIGHT], ms(2025, 11, 1, 22, tz=NY), NY)
    assert at is not None and local(at, NY).hour == 8
    assert at - ms(2025, 11, 1, 22, tz=NY) == 11 * 3_600_000


def test_quiet_hours_end_inside_a_dst_gap() -> None:
    rule = QuietHoursRule(start=time(1), end=time(2, 30))  # 02:30 does not exist that night
    at = quiet_until_ms([rule], ms(2025, 3, 30, 1, 15), AMS)
    assert at is not None and local(at).hour == 3 and at > ms(2025, 3, 30, 1, 15)


def test_overlapping_rules_and_selection() -> None:
    rules = [NIGHT, QuietHoursRule(start=time(7), end=time(9), channels=("sms",),
                                   classes=("marketing", "service", "safety"))]
    policy = QuietHoursPolicy(rules)
    now = ms(2025, 6, 3, 3)
    assert local(policy.send_at_ms("sms", "marketing", now, AMS) or 0).hour == 9
    assert local(policy.send_at_ms("email", "marketing", now, AMS) or 0).hour == 8
    assert policy.send_at_ms("email", "safety", now, AMS) is None  # safety not quiet by default
    assert local(policy.send_at_ms("sms", "safety", ms(2025, 6, 3, 7), AMS) or 0).hour == 9


def test_always_quiet_is_an_error() -> None:
    rules = [QuietHoursRule(start=time(0), end=time(12)), QuietHoursRule(start=time(12),
                                                                         end=time(0))]
    with pytest.raises(ValueError, match="no allowed time"):
        quiet_until_ms(rules, ms(2025, 6, 3, 3), AMS)
