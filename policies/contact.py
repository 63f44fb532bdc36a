"""Contact policy: caps per window, cooldown per action, outcome-based suppression, and no
marketing while a service issue is open. Each check returns ``None`` (allowed) or a reason.

- **Caps** count the customer's contacts in ``window_days`` *calendar days of the customer's
  own time zone*, today included: a 7-day cap at 10:00 on a Wednesday counts from local
  midnight of the Thursday before. A cap of N removes the candidate once N contacts are
  counted (the (N+1)-th is refused; the N-th is allowed). A cap with a channel counts that
  channel; without one, every channel (a global cap). Caps select contact classes, so service
  and safety treatments have their own caps. An emergency bypass skips soft caps only.
- **Cooldown**: the same action again no sooner than ``cooldown_s`` after it was last sent
  (exactly ``cooldown_s`` later is allowed).
- **Suppression**: ``count`` outcomes of one kind (``rejected``, ``ignored``…) on the action
  (or its group) within ``within_days`` of each other suppress it for ``suppress_days`` from
  the last of them. Plain 24-hour days.
- **Service issue**: while the customer has an open service issue, no marketing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from ..engine.contact_history import MS_PER_DAY, ContactHistory
from .local_time import local_day_start_ms
from .policy_config import CapRule, SuppressionRule

__all__ = ["CapsPolicy", "ContactView", "CooldownPolicy", "ServiceIssuePolicy",
           "SuppressionPolicy", "suppressed_until_ms"]


@dataclass(slots=True)
class ContactView:
    """What the contact rules read about one customer at one decision."""

    history: ContactHistory
    tz: ZoneInfo
    now_ms: int
    _counts: dict[str, int] = field(default_factory=dict)  # cap id -> count, per decision

    def cap_count(self, cap: CapRule) -> int:
        count = self._counts.get(cap.id)
        if count is None:
            since = local_day_start_ms(self.now_ms, self.tz, cap.window_days - 1)
            count = self.history.count_since(since, channel=cap.channel, classes=cap.classes)
            self._counts[cap.id] = count
        return count


def _duration(ms: int) -> str:
    hours = ms / 3_600_000
    return f"{hours / 24:.1f} d" if hours >= 48 else f"{hours:.1f} h"


class CapsPolicy:
    name = "contact_cap"

    def __init__(self, caps: Sequence[CapRule]) -> None:
        self.caps = tuple(caps)

    def check(self, channel: str, contact_class: str, view: ContactView, *,
              bypass_soft: bool = False) -> str | None:
        for cap in self.caps:
            if contact_class not in cap.classes or cap.channel not in (None, channel):
                continue
            if bypass_soft and not cap.hard:
                continue
            count = view.cap_count(cap)
            if count >= cap.max_count:
                where = f" on {cap.channel}" if cap.channel else " on all channels"
                return (f"cap {cap.id!r} reached: {count} of {cap.max_count} "
                        f"{'/'.join(cap.classes)} contacts{where} in the last "
                        f"{cap.window_days} calendar day(s)")
        return None


class CooldownPolicy:
    name = "cooldown"

    def check(self, action_id: str, cooldown_s: float, view: ContactView) -> str | None:
        if cooldown_s <= 0:
            return None
        last = view.history.last_sent_ms(action_id)
        if last is None:
            return None
        age = view.now_ms - last
        cooldown_ms = int(cooldown_s * 1000)
        if age < cooldown_ms:
            return (f"sent {_duration(age)} ago; cooldown {_duration(cooldown_ms)} "
                    f"(again from {last + cooldown_ms} ms)")
        return None


def suppressed_until_ms(rule: SuppressionRule, times: Sequence[int]) -> int | None:
    """End of the latest suppression this rule triggers over sorted outcome ``times``."""
    n, within_ms = rule.count, int(rule.within_days * MS_PER_DAY)
    trigger = None
    for i in range(n - 1, len(times)):
        if times[i] - times[i - n + 1] <= within_ms:
            trigger = times[i]
    return None if trigger is None else trigger + int(rule.suppress_days * MS_PER_DAY)


class SuppressionPolicy:
    name = "suppression"

    def check(self, action_id: str, group: str | None, rules: Sequence[SuppressionRule],
              view: ContactView) -> str | None:
        if not view.history.contacts:  # no contact, no outcome: nothing to suppress
            return None
        for rule in rules:
            if rule.scope == "group" and group is None:
                continue
            times = view.history.outcome_times(
                rule.outcome, action_id=action_id if rule.scope == "action" else None,
                group=group if rule.scope == "group" else None)
            until = suppressed_until_ms(rule, times)
            if until is not None and view.now_ms < until:
                subject = f"group {group!r}" if rule.scope == "group" else "this action"
                return (f"{rule.count} {rule.outcome} outcome(s) of {subject} within "
                        f"{rule.within_days:g} days: suppressed for {rule.suppress_days:g} days "
                        f"(until {until} ms)")
        return None


class ServiceIssuePolicy:
    name = "service_issue"

    def check(self, contact_class: str, open_issues: Sequence[str]) -> str | None:
        if contact_class == "marketing" and open_issues:
            return f"no marketing while a service issue is open ({', '.join(open_issues)})"
        return None
