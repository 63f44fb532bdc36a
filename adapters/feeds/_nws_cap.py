"""CAP 1.1/1.2 XML alerts -> fields: a single ``<alert>`` document, or an Atom ``<feed>``
index whose entries carry ``cap:`` elements (the old alerts.weather.gov/cap/*.atom feeds).

Elements are matched by local name, so the CAP version's namespace does not matter. In an Atom
entry the id is ``cap:identifier`` if present, else the entry's ``<id>`` (the URL of the full
CAP message); ``sent`` falls back to ``<published>`` then ``<updated>``, the headline to
``<title>``. Entries without any CAP element (NWS's "no active alerts" entry) are skipped.
Documents with a DOCTYPE are refused: CAP has none, and it is how entity expansion attacks
start.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator

from .errors import AlertRejected
from .weather_alert import WeatherAlert, build_alert

_CAP_NAMESPACE_PREFIX = "{urn:oasis:names:tc:emergency:cap:"
_DOCTYPE = re.compile(r"<!DOCTYPE|<!ENTITY", re.IGNORECASE)
_SAME_GEOCODE_NAMES = ("SAME", "FIPS6")


def parse_cap_xml(data: bytes | str, *, source: str) -> Iterator[WeatherAlert | AlertRejected]:
    """Yield one alert or one rejection per CAP alert; one rejection if the document is bad."""
    head = data if isinstance(data, str) else data.decode("utf-8", errors="replace")
    if _DOCTYPE.search(head):
        yield AlertRejected("XML with a DOCTYPE or ENTITY declaration refused", source=source)
        return
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        yield AlertRejected(f"invalid XML: {exc}", source=source)
        return
    kind = _local(root.tag)
    if kind == "alert":
        yield _build(_alert_fields(root), source=source, index=0)
    elif kind == "feed":
        entries = [child for child in root if _local(child.tag) == "entry"]
        for index, entry in enumerate(entries):
            if any(child.tag.startswith(_CAP_NAMESPACE_PREFIX) for child in entry):
                yield _build(_entry_fields(entry), source=source, index=index)
    else:
        yield AlertRejected(f"not a CAP alert or Atom feed (root element <{kind}>)",
                            source=source)


def _build(fields: dict[str, object], *, source: str,
           index: int) -> WeatherAlert | AlertRejected:
    try:
        return build_alert(fields, source=source, index=index)
    except AlertRejected as rejected:
        return rejected


def _alert_fields(alert: ET.Element) -> dict[str, object]:
    infos = _children(alert, "info")
    info = next(
        (i for i in infos if (_text(i, "language") or "en").lower().startswith("en")),
        infos[0] if infos else ET.Element("info"),
    )
    areas = _children(info, "area")
    geocodes = _geocodes(g for area in areas for g in _children(area, "geocode"))
    area_descs = [desc for area in areas if (desc := _text(area, "areaDesc"))]
    parameters = _geocodes(_children(info, "parameter"))
    return {
        "alert_id": _text(alert, "identifier"),
        "sent": _text(alert, "sent"),
        "status": _text(alert, "status"),
        "message_type": _text(alert, "msgType"),
        "references": _references(_text(alert, "references")),
        "event": _text(info, "event"),
        "effective": _text(info, "effective"),
        "onset": _text(info, "onset"),
        "expires": _text(info, "expires"),
        "ends": next(iter(parameters.get("eventEndingTime", [])), None),
        "severity": _text(info, "severity"),
        "urgency": _text(info, "urgency"),
        "certainty": _text(info, "certainty"),
        "headline": _text(info, "headline"),
        "area_desc": "; ".join(area_descs),
        "same_codes": _same_codes(geocodes),
        "ugc_codes": tuple(dict.fromkeys(geocodes.get("UGC", []))),
    }


def _entry_fields(entry: ET.Element) -> dict[str, object]:
    geocodes = _geocodes(_children(entry, "geocode"))
    return {
        "alert_id": _text(entry, "identifier") or _text(entry, "id"),
        "sent": _text(entry, "sent") or _text(entry, "published") or _text(entry, "updated"),
        "status": _text(entry, "status"),
        "message_type": _text(entry, "msgType"),
        "references": _references(_text(entry, "references")),
        "event": _text(entry, "event"),
        "effective": _text(entry, "effective"),
        "onset": _text(entry, "onset"),
        "expires": _text(entry, "expires"),
        "severity": _text(entry, "severity"),
        "urgency": _text(entry, "urgency"),
        "certainty": _text(entry, "certainty"),
        "headline": _text(entry, "headline") or _text(entry, "title"),
        "area_desc": _text(entry, "areaDesc"),
        "same_codes": _same_codes(geocodes),
        "ugc_codes": tuple(dict.fromkeys(geocodes.get("UGC", []))),
    }


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _children(element: ET.Element, name: str) -> list[ET.Element]:
    return [child for child in element if _local(child.tag) == name]


def _text(element: ET.Element, name: str) -> str | None:
    """The stripped text of the first child called ``name``; None if absent or empty."""
    for child in element:
        if _local(child.tag) == name:
            text = (child.text or "").strip()
            return text or None
    return None


def _geocodes(elements: Iterator[ET.Element] | list[ET.Element]) -> dict[str, list[str]]:
    """``valueName``/``value`` pairs -> {name: values}. A value may hold several codes
    separated by spaces (Atom index), and one element may hold several pairs."""
    found: dict[str, list[str]] = {}
    for element in elements:
        name = ""
        for child in element:
            tag = _local(child.tag)
            if tag == "valueName":
                name = (child.text or "").strip()
            elif tag == "value" and name:
                found.setdefault(name, []).extend((child.text or "").split())
    return found


def _same_codes(geocodes: dict[str, list[str]]) -> tuple[str, ...]:
    codes = [code for name in _SAME_GEOCODE_NAMES for code in geocodes.get(name, [])]
    return tuple(dict.fromkeys(codes))


def _references(text: str | None) -> list[dict[str, str | None]]:
    """CAP ``references``: space-separated ``sender,identifier,sent`` triples."""
    refs: list[dict[str, str | None]] = []
    for token in (text or "").split():
        parts = token.split(",")
        if len(parts) == 3:
            refs.append({"sender": parts[0], "alert_id": parts[1], "sent": parts[2] or None})
        else:
            refs.append({"alert_id": token})
    return refs
