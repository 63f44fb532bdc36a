"""National Weather Service alerts: parse a document, or read a file, directory or URL.

Formats (told apart by the first character, ``{`` or ``<``):

- api.weather.gov GeoJSON: a FeatureCollection (``/alerts/active``) or a single Feature;
- CAP 1.1/1.2 XML: a single ``<alert>``, or an Atom ``<feed>`` index with ``cap:`` elements.

``parse_alerts`` never raises for bad content: each alert either parses into a ``WeatherAlert``
or is listed in ``ParseResult.rejected`` with its source, id (if known), field and reason, and
the other alerts of the document still parse. A document that does not parse at all (truncated
JSON, broken XML) yields a single rejection without an index. ``read_alerts`` raises
``FeedUnavailable`` only when the location itself cannot be read.
"""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from ._nws_cap import parse_cap_xml
from ._nws_geojson import parse_geojson
from .errors import AlertRejected, FeedUnavailable, FeedUsageError
from .weather_alert import (
    AlertReference,
    AlertStatus,
    Certainty,
    MessageType,
    Severity,
    Urgency,
    WeatherAlert,
    fips_for_same,
    is_actionable,
    is_expired,
)

__all__ = [
    "AlertReference",
    "AlertRejection",
    "AlertStatus",
    "Certainty",
    "MessageType",
    "ParseResult",
    "Severity",
    "Urgency",
    "WeatherAlert",
    "fips_for_same",
    "is_actionable",
    "is_expired",
    "parse_alerts",
    "read_alerts",
]

ALERT_FILE_SUFFIXES = frozenset({".json", ".xml"})
DEFAULT_USER_AGENT = "shush-nws-feed/0.1"
_ACCEPT = "application/geo+json, application/atom+xml, application/cap+xml;q=0.9, */*;q=0.5"
_CHUNK_BYTES = 64 * 1024


class AlertRejection(BaseModel):
    """One alert (or a whole document, when ``index`` is None) that did not parse."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str = Field(description="File path or URL the alert came from")
    alert_id: str = Field(default="", description="The alert's id, empty when unknown")
    field: str = Field(default="", description="The WeatherAlert field at fault, empty if none")
    reason: str = Field(description="Why the alert was refused")
    index: int | None = Field(
        default=None, description="Position of the alert in its document; None: the whole document"
    )

    @classmethod
    def from_error(cls, error: AlertRejected) -> AlertRejection:
        return cls(source=error.source, alert_id=error.alert_id, field=error.field,
                   reason=error.reason, index=error.index)


class ParseResult(BaseModel):
    """The alerts that parsed and the ones that did not, in document order."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    alerts: tuple[WeatherAlert, ...] = Field(default=(), description="Alerts that parsed")
    rejected: tuple[AlertRejection, ...] = Field(default=(), description="Alerts that did not")

    @classmethod
    def combine(cls, results: Iterable[ParseResult]) -> ParseResult:
        """One result holding the alerts and rejections of ``results``, in order."""
        alerts: list[WeatherAlert] = []
        rejected: list[AlertRejection] = []
        for result in results:
            alerts.extend(result.alerts)
            rejected.extend(result.rejected)
        return cls(alerts=tuple(alerts), rejected=tuple(rejected))


def parse_alerts(data: bytes | str, *, source: str) -> ParseResult:
    """Parse one GeoJSON or CAP XML document; ``source`` names it in rejections."""
    first = _first_char(data)
    if first == "<":
        items = list(parse_cap_xml(data, source=source))
    elif first in ("{", "["):
        try:
            text = data if isinstance(data, str) else data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            items = [AlertRejected(f"not UTF-8: {exc}", source=source)]
        else:
            items = list(parse_geojson(text, source=source))
    elif first == "":
        items = [AlertRejected("empty document", source=source)]
    else:
        items = [AlertRejected("neither JSON nor XML", source=source)]
    return ParseResult(
        alerts=tuple(item for item in items if isinstance(item, WeatherAlert)),
        rejected=tuple(
            AlertRejection.from_error(item) for item in items if isinstance(item, AlertRejected)
        ),
    )


def read_alerts(location: str | Path, *, timeout_s: float = 10.0,
                max_bytes: int = 50_000_000,
                user_agent: str = DEFAULT_USER_AGENT) -> ParseResult:
    """Read alerts from a file, a directory (its ``.json`` and ``.xml`` files, not recursing,
    in name order; an unreadable file becomes a rejection) or an http(s) URL.

    For a URL, ``timeout_s`` bounds the whole download and ``max_bytes`` its size; api.weather.gov
    asks callers to send a ``user_agent`` that identifies them. Raises ``FeedUnavailable`` when
    the location cannot be read.
    """
    if isinstance(location, str) and "://" in location:
        scheme = location.partition("://")[0].lower()
        if scheme not in ("http", "https"):
            raise FeedUsageError(f"unsupported URL scheme {scheme!r}", field="location")
        body = _fetch(location, timeout_s=timeout_s, max_bytes=max_bytes,
                      user_agent=user_agent)
        return parse_alerts(body, source=location)
    path = Path(location)
    if path.is_dir():
        return ParseResult.combine(_read_file_in_dir(p) for p in sorted(path.iterdir())
                                   if p.is_file() and p.suffix.lower() in ALERT_FILE_SUFFIXES)
    try:
        return parse_alerts(path.read_bytes(), source=str(path))
    except OSError as exc:
        raise FeedUnavailable(exc.strerror or str(exc), source=str(path)) from exc


def _read_file_in_dir(path: Path) -> ParseResult:
    try:
        data = path.read_bytes()
    except OSError as exc:
        error = AlertRejected(f"unreadable: {exc.strerror or exc}", source=str(path))
        return ParseResult(rejected=(AlertRejection.from_error(error),))
    return parse_alerts(data, source=str(path))


def _fetch(url: str, *, timeout_s: float, max_bytes: int, user_agent: str) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": user_agent, "Accept": _ACCEPT})
    deadline = time.monotonic() + timeout_s
    chunks: list[bytes] = []
    size = 0
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            while chunk := response.read(_CHUNK_BYTES):
                size += len(chunk)
                if size > max_bytes:
                    raise FeedUnavailable(f"response larger than {max_bytes} bytes", source=url)
                if time.monotonic() > deadline:
                    raise FeedUnavailable(f"download took over {timeout_s}s", source=url)
                chunks.append(chunk)
    except urllib.error.HTTPError as exc:
        raise FeedUnavailable(f"HTTP {exc.code} {exc.reason}", source=url) from exc
    except urllib.error.URLError as exc:
        raise FeedUnavailable(f"cannot connect: {exc.reason}", source=url) from exc
    except (OSError, http.client.HTTPException) as exc:  # timeouts, resets, short reads
        raise FeedUnavailable(f"{type(exc).__name__}: {exc}", source=url) from exc
    return b"".join(chunks)


def _first_char(data: bytes | str) -> str:
    if isinstance(data, bytes):
        head = data[:4096].removeprefix(b"\xef\xbb\xbf").lstrip()
        return chr(head[0]) if head else ""
    head_text = data[:4096].removeprefix("\ufeff").lstrip()
    return head_text[:1]
