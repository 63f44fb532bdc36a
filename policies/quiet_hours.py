"""Quiet hours in the customer's time zone: send now, or the next allowed send time.

A treatment decided inside quiet hours is deferred, not dropped and not sent: the caller keeps
the decision and arms a durable timer for the returned time, then re-checks consent (and the
contact caps) right before sending.

Each ``QuietHoursRule`` is a daily local interval ``[start, end)``; ``end < start`` crosses
midnight (21:00-08:00). Rules select contact classes and channels; safety treatments are quiet
only if a rule names the ``safety`` class. With several rules, the time returned is the first
one that none of them holds quiet. Local times are read in the customer's zone on the day in
question, so the deferral follows DST changes (08:00 local is 08:00 local before and after).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from zoneinfo import ZoneInfo

from .local_time import local_datetime, wall_time_ms
from .policy_config import QuietHoursRule

__all__ = ["QuietHoursPolicy", "quiet_until_ms"]

_MAX_HOPS = 16


def _rule_end_ms(rule: QuietHoursRule, now_ms: int, tz: ZoneInfo) -> int | None:
    """If ``now_ms`` is inside this rule's quiet interval, the instant it ends, else None."""
    local = local_datetime(now_ms, tz)
    clock = local.time().replace(tzinfo=None)
    today = local.date()
    if rule.start < rule.end:  # same-day interval
        if rule.start <= clock < rule.end:
            return wall_time_ms(today, rule.end, tz)
        return None
    if clock >= rule.start:  # over midnight: from start tonight to end tomorrow
        return wall_time_ms(today + timedelta(days=1), rule.end, tz)
    if clock < rule.end:  # the early-morning part
        return wall_time_ms(today, rule.end, tz)
    return None


def quiet_until_ms(rules: Sequence[QuietHoursRule], now_ms: int, tz: ZoneInfo) -> int | None:
    """``None``: send now. Otherwise the first instant after ``now_ms`` outside every rule."""
    at = now_ms
    for _ in range(_MAX_HOPS):
        ends = [end for rule in rules if (end := _rule_end_ms(rule, at, tz)) is not None]
        if not ends:
            return None if at == now_ms else at
        nxt = max(ends)
        at = nxt if nxt > at else at + 1  # a wall time inside a DST gap cannot stall us
    raise ValueError("quiet hours leave no allowed time within the next days")


class QuietHoursPolicy:
    name = "quiet_hours"

    def __init__(self, rules: Sequence[QuietHoursRule]) -> None:
        self.rules = tuple(rules)

    def rules_for(self, channel: str, contact_class: str) -> list[QuietHoursRule]:
        return [r for r in self.rules if contact_class in r.classes
                and (r.channels is None or channel in r.channels)]

    def send_at_ms(self, channel: str, contact_class: str, now_ms: int,
                   tz: ZoneInfo) -> int | None:
        """``None``: send now; else the next allowed local time, as engine ms."""
        rules = self.rules_for(channel, contact_class)
        return quiet_until_ms(rules, now_ms, tz) if rules else None
