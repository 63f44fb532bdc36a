"""``WeatherAlert``: one National Weather Service alert, whatever format it came in.

The fields follow CAP 1.1/1.2 (which api.weather.gov mirrors). Geography comes three ways:

- ``same_codes``: 6-digit SAME codes ``PSSCCC`` (P county part, 0 = whole county; SS state FIPS;
  CCC county FIPS). CAP's ``FIPS6`` geocode is the same code. Marine areas have SAME codes too
  (state parts 57-59, 61, 65, 73, 75, 77, 91-97).
- ``fips_counties``: the 5-digit county FIPS ``SSCCC`` of every SAME code whose state part is a
  state, DC or territory, derived from ``same_codes`` (marine codes yield none; a part-county
  code yields its whole county, a superset).
- ``ugc_codes``: NWS zones and counties such as ``ORZ006`` / ``WAC033``, kept as given.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import AlertRejected, FeedUsageError

__all__ = [
    "AlertReference",
    "AlertStatus",
    "Certainty",
    "MessageType",
    "Severity",
    "Urgency",
    "WeatherAlert",
    "build_alert",
    "fips_for_same",
    "is_actionable",
    "is_expired",
]


class AlertStatus(StrEnum):
    ACTUAL = "Actual"
    EXERCISE = "Exercise"
    SYSTEM = "System"
    TEST = "Test"
    DRAFT = "Draft"


class MessageType(StrEnum):
    ALERT = "Alert"
    UPDATE = "Update"
    CANCEL = "Cancel"
    ACK = "Ack"
    ERROR = "Error"


class Severity(StrEnum):
    EXTREME = "Extreme"
    SEVERE = "Severe"
    MODERATE = "Moderate"
    MINOR = "Minor"
    UNKNOWN = "Unknown"


class Urgency(StrEnum):
    IMMEDIATE = "Immediate"
    EXPECTED = "Expected"
    FUTURE = "Future"
    PAST = "Past"
    UNKNOWN = "Unknown"


class Certainty(StrEnum):
    OBSERVED = "Observed"
    LIKELY = "Likely"
    POSSIBLE = "Possible"
    UNLIKELY = "Unlikely"
    UNKNOWN = "Unknown"


SameCode = Annotated[str, StringConstraints(pattern=r"^\d{6}$")]
FipsCounty = Annotated[str, StringConstraints(pattern=r"^\d{5}$")]
UgcCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}[CZ]\d{3}$")]
AlertId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]

# State FIPS codes of the 50 states and DC, then American Samoa, Micronesia, Guam, Marshall
# Islands, Northern Mariana Islands, Palau, Puerto Rico, US Minor Outlying Islands, Virgin Islands.
_LAND_STATE_FIPS = frozenset(
    [f"{n:02d}" for n in range(1, 57) if n not in (3, 7, 14, 43, 52)]
    + ["60", "64", "66", "68", "69", "70", "72", "74", "78"]
)

_DATETIME_FIELDS = ("sent", "effective", "onset", "expires", "ends")
_REQUIRED_FIELDS = ("alert_id", "sent", "status", "message_type", "event")


def fips_for_same(same_code: str) -> str | None:
    """The county FIPS of a SAME code (``"041051"`` -> ``"41051"``), None for marine areas."""
    if len(same_code) != 6 or not same_code.isdigit():
        return None
    fips = same_code[1:]
    return fips if fips[:2] in _LAND_STATE_FIPS else None


def _fips_counties(same_codes: Any) -> tuple[str, ...]:
    if not isinstance(same_codes, list | tuple):
        return ()
    found = (fips_for_same(code) for code in same_codes if isinstance(code, str))
    return tuple(dict.fromkeys(fips for fips in found if fips))


def _check_datetime_input(value: Any) -> Any:
    # pydantic would read a number as a Unix time; feeds only ever send ISO 8601 text.
    if value is not None and not isinstance(value, str | datetime):
        raise ValueError(f"expected an ISO 8601 date-time string, got {type(value).__name__}")
    return value


class AlertReference(BaseModel):
    """An earlier alert this one updates or cancels (CAP ``references``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    alert_id: AlertId = Field(description="Identifier of the earlier alert")
    sent: AwareDatetime | None = Field(default=None, description="When the earlier alert was sent")
    sender: str = Field(default="", description="Sender of the earlier alert")

    _check_sent = field_validator("sent", mode="before")(_check_datetime_input)


class WeatherAlert(BaseModel):
    """One NWS alert message (CAP ``alert`` with its first ``info`` block)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    alert_id: AlertId = Field(description="CAP identifier (api.weather.gov ``id``; Atom entry id)")
    sent: AwareDatetime = Field(description="When the message was sent")
    effective: AwareDatetime | None = Field(default=None, description="When the info applies")
    onset: AwareDatetime | None = Field(default=None, description="Expected start of the hazard")
    expires: AwareDatetime | None = Field(default=None, description="When the message expires")
    ends: AwareDatetime | None = Field(default=None, description="Expected end of the hazard")
    status: AlertStatus = Field(description="Actual, Exercise, System, Test or Draft")
    message_type: MessageType = Field(description="Alert, Update, Cancel, Ack or Error")
    event: Annotated[str, StringConstraints(min_length=1)] = Field(
        description="Event type, e.g. 'Hurricane Warning'"
    )
    severity: Severity = Field(default=Severity.UNKNOWN, description="CAP severity")
    urgency: Urgency = Field(default=Urgency.UNKNOWN, description="CAP urgency")
    certainty: Certainty = Field(default=Certainty.UNKNOWN, description="CAP certainty")
    headline: str = Field(default="", description="One-line headline")
    area_desc: str = Field(default="", description="Text description of the affected area")
    same_codes: tuple[SameCode, ...] = Field(default=(), description="6-digit SAME (FIPS6) codes")
    fips_counties: tuple[FipsCounty, ...] = Field(
        default=(), description="5-digit county FIPS derived from same_codes (land areas only)"
    )
    ugc_codes: tuple[UgcCode, ...] = Field(default=(), description="NWS UGC zone/county codes")
    references: tuple[AlertReference, ...] = Field(
        default=(), description="Earlier alerts this one updates or cancels"
    )

    _check_datetimes = field_validator(*_DATETIME_FIELDS, mode="before")(_check_datetime_input)

    @model_validator(mode="before")
    @classmethod
    def _derive_fips(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "fips_counties" not in data:
            return {**data, "fips_counties": _fips_counties(data.get("same_codes", ()))}
        return data

    @model_validator(mode="after")
    def _check_fips(self) -> WeatherAlert:
        if self.fips_counties != _fips_counties(self.same_codes):
            raise ValueError("fips_counties must be the counties of same_codes")
        return self

    @property
    def reference_ids(self) -> tuple[str, ...]:
        """Ids of the earlier alerts this one updates or cancels."""
        return tuple(ref.alert_id for ref in self.references)

    @property
    def expiry(self) -> datetime | None:
        """``expires``, or ``ends`` when the message gives no expiry; None when neither."""
        return self.expires if self.expires is not None else self.ends


def build_alert(fields: Mapping[str, object], *, source: str,
                index: int | None = None) -> WeatherAlert:
    """Validate ``fields`` (``WeatherAlert`` field names) into an alert, or raise
    ``AlertRejected`` naming the first bad field. None values count as absent."""
    raw_id = fields.get("alert_id")
    alert_id = raw_id.strip() if isinstance(raw_id, str) else ""
    for name in _REQUIRED_FIELDS:
        value = fields.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise AlertRejected(f"missing required field {name}", source=source,
                                alert_id=alert_id, field=name, index=index)
    data = {name: value for name, value in fields.items() if value is not None}
    try:
        return WeatherAlert.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = error["loc"]
        field = str(loc[0]) if loc else ""
        shown = repr(error["input"])
        reason = error["msg"] if len(shown) > 80 else f"{error['msg']} (got {shown})"
        raise AlertRejected(reason, source=source, alert_id=alert_id, field=field,
                            index=index) from exc


def _check_aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise FeedUsageError("must be timezone-aware", field="now")


def is_expired(alert: WeatherAlert, now: datetime) -> bool:
    """True once ``now`` reaches the alert's ``expires`` (``ends`` if it has no ``expires``).

    ``expires`` is when the message stops being valid; NWS reissues long-running hazards before
    then, and ``ends`` (the hazard's end) can lie days later (Excessive Heat Warnings do), so a
    message past ``expires`` is stale even while the hazard lasts. No expiry: never expired.
    """
    _check_aware(now)
    expiry = alert.expiry
    return expiry is not None and now >= expiry


def is_actionable(alert: WeatherAlert, now: datetime) -> bool:
    """An Actual Alert or Update that has not expired: worth acting on for customers."""
    return (
        alert.status is AlertStatus.ACTUAL
        and alert.message_type in (MessageType.ALERT, MessageType.UPDATE)
        and not is_expired(alert, now)
    )
