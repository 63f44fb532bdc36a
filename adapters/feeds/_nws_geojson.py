"""api.weather.gov GeoJSON alerts (a FeatureCollection or a single Feature) -> fields."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from .errors import AlertRejected
from .weather_alert import WeatherAlert, build_alert

_API_ALERT_PREFIX = "https://api.weather.gov/alerts/"


def parse_geojson(text: str, *, source: str) -> Iterator[WeatherAlert | AlertRejected]:
    """Yield one alert or one rejection per feature; one rejection if the document is bad."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        yield AlertRejected(f"invalid JSON: {exc}", source=source)
        return
    if not isinstance(doc, dict):
        yield AlertRejected("not a GeoJSON object", source=source)
        return
    kind = doc.get("type")
    if kind == "Feature":
        features: list[Any] = [doc]
    elif kind == "FeatureCollection" and isinstance(doc.get("features"), list):
        features = doc["features"]
    else:
        yield AlertRejected(f"not a GeoJSON FeatureCollection or Feature (type {kind!r})",
                            source=source)
        return
    for index, feature in enumerate(features):
        try:
            yield build_alert(_feature_fields(feature, source=source, index=index),
                              source=source, index=index)
        except AlertRejected as rejected:
            yield rejected


def _feature_fields(feature: Any, *, source: str, index: int) -> dict[str, object]:
    if not isinstance(feature, dict):
        raise AlertRejected("feature is not an object", source=source, index=index)
    props = feature.get("properties")
    alert_id = _alert_id(feature, props)
    if not isinstance(props, dict):
        raise AlertRejected("feature has no properties object", source=source,
                            alert_id=alert_id or "", field="properties", index=index)
    geocode = props.get("geocode")
    if geocode is None:
        geocode = {}
    if not isinstance(geocode, dict):
        raise AlertRejected("geocode is not an object", source=source,
                            alert_id=alert_id or "", field="same_codes", index=index)
    return {
        "alert_id": alert_id,
        "sent": props.get("sent"),
        "effective": props.get("effective"),
        "onset": props.get("onset"),
        "expires": props.get("expires"),
        "ends": props.get("ends"),
        "status": props.get("status"),
        "message_type": props.get("messageType"),
        "event": props.get("event"),
        "severity": props.get("severity"),
        "urgency": props.get("urgency"),
        "certainty": props.get("certainty"),
        "headline": props.get("headline"),
        "area_desc": props.get("areaDesc"),
        "same_codes": _unique(geocode.get("SAME")),
        "ugc_codes": _unique(geocode.get("UGC")),
        "references": _references(props.get("references")),
    }


def _alert_id(feature: dict[str, Any], props: Any) -> str | None:
    if isinstance(props, dict) and isinstance(props.get("id"), str):
        return str(props["id"])
    feature_id = feature.get("id")
    if isinstance(feature_id, str):
        return feature_id.removeprefix(_API_ALERT_PREFIX)
    return None


def _unique(values: Any) -> object:
    """A list without repeats (order kept); anything else goes on for validation to refuse."""
    if values is None:
        return ()
    if isinstance(values, list):
        return tuple(dict.fromkeys(values)) if all(isinstance(v, str) for v in values) else values
    return values


def _references(refs: Any) -> object:
    if refs is None:
        return ()
    if not isinstance(refs, list):
        return refs
    out: list[object] = []
    for ref in refs:
        if isinstance(ref, dict):
            ref_id = ref.get("identifier")
            if ref_id is None and isinstance(ref.get("@id"), str):
                ref_id = ref["@id"].removeprefix(_API_ALERT_PREFIX)
            out.append({"alert_id": ref_id, "sent": ref.get("sent"),
                        "sender": ref.get("sender") or ""})
        else:
            out.append(ref)
    return out
