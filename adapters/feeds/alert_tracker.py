"""``AlertTracker``: group NWS alerts into incidents through their ``references`` chains.

An Update or Cancel names the earlier alerts it replaces (api.weather.gov lists the whole
chain, CAP ``references`` likewise). Every alert id seen, and every id referenced, belongs to
exactly one incident; an alert that references an id already known joins that incident, so a
caller that keys its treatments by ``incident_id`` treats a customer once per incident, not once
per message.

The incident id is chosen when the incident is first seen: the earliest-sent alert among the
new alert and the references that carry a ``sent`` time (ties by id). Because NWS updates
reference the chain back to the original alert, a tracker started mid-incident (after a
restart) usually picks the same id as one that saw the whole chain. Later alerts never rename
an incident, except when one alert links two incidents already known: they merge into the one
with the earlier root, and the sighting lists the id that went away in ``merged_incident_ids``.

The tracker lives in memory; ``prune`` forgets incidents whose last message has long expired.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from .errors import FeedUsageError
from .weather_alert import MessageType, WeatherAlert

__all__ = ["AlertTracker", "Incident", "IncidentSighting"]


@dataclass(frozen=True, slots=True)
class IncidentSighting:
    """What ``AlertTracker.observe`` learnt from one alert."""

    alert_id: str
    incident_id: str
    is_new_incident: bool  # no alert or reference of this chain was known before
    is_repeat: bool  # this very alert id was observed before
    is_cancel: bool  # the alert is a Cancel (the incident is now cancelled)
    merged_incident_ids: frozenset[str] = frozenset()  # incidents folded into incident_id


@dataclass(slots=True)
class Incident:
    """One incident: the alert ids observed or referenced in its chain."""

    incident_id: str
    root_sent: datetime
    ids: set[str] = field(default_factory=set)
    observed_ids: set[str] = field(default_factory=set)
    cancelled: bool = False
    last_relevant: datetime | None = None  # latest expiry (or sent) of its observed alerts


class AlertTracker:
    """Remembers alert ids and reference chains; see the module docstring."""

    def __init__(self) -> None:
        self._incident_of: dict[str, str] = {}
        self._incidents: dict[str, Incident] = {}

    def __len__(self) -> int:
        return len(self._incidents)

    def __contains__(self, alert_id: object) -> bool:
        return alert_id in self._incident_of

    def incident_of(self, alert_id: str) -> str | None:
        """The incident an alert id (observed or referenced) belongs to, None if unknown."""
        return self._incident_of.get(alert_id)

    def incident(self, incident_id: str) -> Incident | None:
        return self._incidents.get(incident_id)

    def is_cancelled(self, incident_id: str) -> bool:
        incident = self._incidents.get(incident_id)
        return incident is not None and incident.cancelled

    def observe(self, alert: WeatherAlert) -> IncidentSighting:
        """Record ``alert`` and return the incident it belongs to."""
        chain = [alert.alert_id, *alert.reference_ids]
        known = list(dict.fromkeys(
            self._incident_of[alert_id] for alert_id in chain if alert_id in self._incident_of
        ))
        incident = self._incidents[known[0]] if known else self._new_incident(alert)
        merged: set[str] = set()
        for other_id in known[1:]:
            survivor = self._merge(incident, self._incidents[other_id])
            merged.add(other_id if survivor.incident_id != other_id else incident.incident_id)
            incident = survivor
        is_repeat = alert.alert_id in incident.observed_ids
        for alert_id in chain:
            if alert_id not in incident.ids:
                incident.ids.add(alert_id)
                self._incident_of[alert_id] = incident.incident_id
        incident.observed_ids.add(alert.alert_id)
        is_cancel = alert.message_type is MessageType.CANCEL
        incident.cancelled = incident.cancelled or is_cancel
        relevant = alert.expiry or alert.sent
        if incident.last_relevant is None or relevant > incident.last_relevant:
            incident.last_relevant = relevant
        return IncidentSighting(
            alert_id=alert.alert_id,
            incident_id=incident.incident_id,
            is_new_incident=not known,
            is_repeat=is_repeat,
            is_cancel=is_cancel,
            merged_incident_ids=frozenset(merged),
        )

    def prune(self, now: datetime, *, keep_for: timedelta = timedelta(days=2)) -> int:
        """Forget incidents whose latest expiry is more than ``keep_for`` before ``now``;
        returns how many were forgotten. A late Update of one starts a new incident."""
        if now.tzinfo is None or now.utcoffset() is None:
            raise FeedUsageError("must be timezone-aware", field="now")
        cutoff = now - keep_for
        stale = [incident for incident in self._incidents.values()
                 if incident.last_relevant is not None and incident.last_relevant < cutoff]
        for incident in stale:
            for alert_id in incident.ids:
                del self._incident_of[alert_id]
            del self._incidents[incident.incident_id]
        return len(stale)

    def _new_incident(self, alert: WeatherAlert) -> Incident:
        candidates = [(alert.sent, alert.alert_id)] + [
            (ref.sent, ref.alert_id) for ref in alert.references if ref.sent is not None
        ]
        root_sent, root_id = min(candidates)
        incident = Incident(incident_id=root_id, root_sent=root_sent)
        self._incidents[root_id] = incident
        return incident

    def _merge(self, first: Incident, second: Incident) -> Incident:
        """Fold the incident with the later root into the other; return the survivor."""
        first_key = (first.root_sent, first.incident_id)
        second_key = (second.root_sent, second.incident_id)
        keep, drop = (first, second) if first_key <= second_key else (second, first)
        for alert_id in drop.ids:
            self._incident_of[alert_id] = keep.incident_id
        keep.ids |= drop.ids
        keep.observed_ids |= drop.observed_ids
        keep.cancelled = keep.cancelled or drop.cancelled
        if drop.last_relevant is not None and (
            keep.last_relevant is None or drop.last_relevant > keep.last_relevant
        ):
            keep.last_relevant = drop.last_relevant
        del self._incidents[drop.incident_id]
        return keep

