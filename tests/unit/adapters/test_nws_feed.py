"""NWS alert feed: parsing the real samples, rejections, expiry, incident tracking, reading.

The samples in ``tests/data/nws`` are real (see its SOURCES.md); every count asserted here was
checked by reading the files.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from shush.adapters.feeds import nws
from shush.adapters.feeds.alert_tracker import AlertTracker
from shush.adapters.feeds.errors import FeedUnavailable, FeedUsageError
from shush.adapters.feeds.nws import (
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
    parse_alerts,
    read_alerts,
)
from shush.engine.errors import ShushError

DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "nws"
FREEZE_XML = DATA_DIR / "beardicus_2022-12-23_AL_HardFreezeWarning_TAE.xml"
IDALIA_XML = DATA_DIR / "beardicus_2023-08-30_AL_HurricaneLocalStatement_Idalia_TAE.xml"
ATOM_XML = DATA_DIR / "tnris_cap_atom_index_2014-11-05.xml"
FINITY_JSON = DATA_DIR / "finity69x2_nws_alerts_api.json"
PYNWS_JSON = DATA_DIR / "pynws_alerts_active_zone.json"
PYNWS_SECOND_JSON = DATA_DIR / "pynws_alerts_active_zone_second.json"
NORTHWEST_JSON = DATA_DIR / "northwest_alerts_2025-12-15_subset.json"

MST = timezone(timedelta(hours=-7))
PST = timezone(timedelta(hours=-8))

# file -> (alerts, of which Alert, of which Update, of which carry references)
SAMPLE_COUNTS = {
    FREEZE_XML.name: (1, 1, 0, 0),
    IDALIA_XML.name: (1, 1, 0, 0),
    ATOM_XML.name: (39, 39, 0, 0),
    FINITY_JSON.name: (2, 1, 1, 1),
    PYNWS_JSON.name: (1, 0, 1, 1),
    PYNWS_SECOND_JSON.name: (2, 0, 2, 2),
    NORTHWEST_JSON.name: (75, 30, 45, 45),
}


def _alert(path: Path, index: int = 0) -> WeatherAlert:
    result = read_alerts(path)
    assert not result.rejected
    return result.alerts[index]


def _variant(alert: WeatherAlert, **changes: Any) -> WeatherAlert:
    """A validated copy of a real alert with some fields changed."""
    data = alert.model_dump(exclude={"fips_counties"})
    data.update(changes)
    return WeatherAlert.model_validate(data)


# --- every real sample parses -------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SAMPLE_COUNTS))
def test_every_sample_parses_with_the_verified_counts(name: str) -> None:
    result = read_alerts(DATA_DIR / name)
    total, alerts, updates, with_refs = SAMPLE_COUNTS[name]
    assert result.rejected == ()
    assert len(result.alerts) == total
    kinds = Counter(a.message_type for a in result.alerts)
    assert kinds == Counter({MessageType.ALERT: alerts, MessageType.UPDATE: updates}) - Counter()
    assert sum(1 for a in result.alerts if a.references) == with_refs
    assert all(a.status is AlertStatus.ACTUAL for a in result.alerts)
    assert all(a.fips_counties for a in result.alerts)  # every shipped sample names counties


def test_parse_accepts_str_and_bytes_alike() -> None:
    for path in (FINITY_JSON, FREEZE_XML):
        from_bytes = parse_alerts(path.read_bytes(), source=str(path))
        from_text = parse_alerts(path.read_text(encoding="utf-8"), source=str(path))
        assert from_bytes == from_text


def test_geojson_fields_of_a_real_update() -> None:
    heat = _alert(FINITY_JSON, 0)
    assert heat.alert_id == "urn:oid:2.49.0.1.840.0.505a7220d91b00eb1d75a3fb4f339f825496a522.004.1"
    assert heat.event == "Excessive Heat Warning"
    assert heat.message_type is MessageType.UPDATE
    assert (heat.severity, heat.urgency, heat.certainty) == (
        Severity.SEVERE, Urgency.EXPECTED, Certainty.LIKELY)
    assert heat.sent == datetime(2024, 7, 18, 12, 47, tzinfo=MST)
    assert heat.expires == datetime(2024, 7, 19, 3, 0, tzinfo=MST)
    assert heat.ends == datetime(2024, 7, 20, 20, 0, tzinfo=MST)
    assert heat.same_codes == ("004013",)
    assert heat.fips_counties == ("04013",)
    assert len(heat.ugc_codes) == 9 and heat.ugc_codes[0] == "AZZ537"
    assert heat.references == (AlertReference(
        alert_id="urn:oid:2.49.0.1.840.0.2852349b8f25500975c692db29cb2f047ff20a7c.004.2",
        sent=datetime(2024, 7, 18, 1, 14, tzinfo=MST), sender="w-nws.webmaster@noaa.gov"),)
    air = _alert(FINITY_JSON, 1)
    assert air.event == "Air Quality Alert" and air.ends is None
    assert air.severity is Severity.UNKNOWN and air.ugc_codes == ("AZC013",)


def test_pynws_update_lists_its_whole_chain() -> None:
    watch = _alert(PYNWS_JSON)
    assert watch.alert_id == "NWS-IDP-PROD-3965873-3369046"
    assert watch.reference_ids == (
        "NWS-IDP-PROD-3964821-3368352", "NWS-IDP-PROD-3965324-3368680",
        "NWS-IDP-PROD-3965155-3368578", "NWS-IDP-PROD-3963421-3367361",
    )
    assert len(watch.same_codes) == 16 and len(watch.fips_counties) == 16
    assert "41051" in watch.fips_counties  # Multnomah County, OR
    assert len(watch.ugc_codes) == 11


def test_single_geojson_feature_document() -> None:
    feature = json.loads(FINITY_JSON.read_text())["features"][1]
    result = parse_alerts(json.dumps(feature), source="one-feature")
    assert [a.event for a in result.alerts] == ["Air Quality Alert"]
    assert result.rejected == ()


def test_cap_alert_fields() -> None:
    freeze = _alert(FREEZE_XML)
    assert freeze.alert_id.startswith("NOAA-NWS-ALERTS-AL12641ED16A5C.HardFreezeWarning.")
    assert freeze.event == "Hard Freeze Warning"
    assert freeze.sent == datetime(2022, 12, 23, 7, 3, tzinfo=UTC)  # 01:03-06:00
    assert freeze.expires == datetime(2022, 12, 23, 17, 0, tzinfo=UTC)
    assert freeze.onset is None and freeze.ends is None
    assert freeze.area_desc == "Coffee; Dale; Geneva"
    assert freeze.same_codes == ("001031", "001045", "001061")  # CAP FIPS6 geocodes
    assert freeze.fips_counties == ("01031", "01045", "01061")
    assert freeze.ugc_codes == ("ALZ065", "ALZ066", "ALZ068")
    assert freeze.headline.startswith("Hard Freeze Warning issued December 23")
    idalia = _alert(IDALIA_XML)
    assert idalia.event == "Hurricane Local Statement"
    assert idalia.severity is Severity.SEVERE and idalia.certainty is Certainty.POSSIBLE
    assert idalia.fips_counties == ("01031", "01045", "01061", "01067", "01069")


def test_atom_index_entries() -> None:
    alerts = read_alerts(ATOM_XML).alerts
    assert len({a.alert_id for a in alerts}) == 39
    first = alerts[0]
    assert first.alert_id == (
        "http://alerts.weather.gov/cap/wwacapget.php?x=AK1251776ADAE4.HighWindWarning."
        "125177795010AK.AJKNPWAJK.0b2fbe9c62ef103901a2841f43c56168"
    )
    assert first.event == "High Wind Warning" and first.severity is Severity.SEVERE
    assert first.sent == datetime(2014, 11, 5, 14, 25, tzinfo=UTC)  # <published>
    # one <value> holding several space-separated codes
    assert first.same_codes == ("002105", "002195", "002198", "002220", "002275")
    assert first.fips_counties == ("02105", "02195", "02198", "02220", "02275")
    assert first.ugc_codes == ("AKZ023", "AKZ026")
    assert first.headline.startswith("High Wind Warning issued November 05")
    events = Counter(a.event for a in alerts)
    assert events["Wind Advisory"] == 9 and events["Red Flag Warning"] == 5


def test_atom_entry_without_cap_elements_is_skipped() -> None:
    text = ATOM_XML.read_text()
    empty = "<entry><id>http://alerts.weather.gov/cap/us.atom</id>" \
            "<title>There are no active watches, warnings or advisories</title></entry>"
    result = parse_alerts(text.replace("</feed>", empty + "</feed>"), source="atom")
    assert len(result.alerts) == 39 and result.rejected == ()


# --- SAME -> FIPS ---------------------------------------------------------------------------


def test_same_to_fips() -> None:
    assert fips_for_same("004013") == "04013"
    assert fips_for_same("041051") == "41051"
    assert fips_for_same("141051") == "41051"  # part of a county -> the county
    assert fips_for_same("072127") == "72127"  # Puerto Rico
    assert fips_for_same("057150") is None  # marine area (Pacific coastal waters)
    assert fips_for_same("091542") is None  # Great Lakes
    assert fips_for_same("4013") is None and fips_for_same("00401x") is None


def test_marine_same_codes_yield_no_counties() -> None:
    doc = json.loads(FINITY_JSON.read_text())
    doc["features"][0]["properties"]["geocode"]["SAME"] = ["057150", "004013", "004013"]
    alert = parse_alerts(json.dumps(doc), source="marine").alerts[0]
    assert alert.same_codes == ("057150", "004013")  # repeats dropped, order kept
    assert alert.fips_counties == ("04013",)


def test_fips_counties_must_match_same_codes() -> None:
    heat = _alert(FINITY_JSON)
    with pytest.raises(ValidationError, match="fips_counties"):
        WeatherAlert.model_validate({**heat.model_dump(), "fips_counties": ("06037",)})
    assert WeatherAlert.model_validate(heat.model_dump()) == heat  # round trip
    with pytest.raises(ValidationError):
        heat.event = "Tornado Warning"  # frozen


# --- malformed alerts are rejected, the others parse ------------------------------------------


def test_truncated_json_is_one_document_rejection() -> None:
    text = NORTHWEST_JSON.read_text()
    result = parse_alerts(text[: len(text) // 2], source="cut.json")
    assert result.alerts == ()
    (rejection,) = result.rejected
    assert rejection.source == "cut.json" and rejection.index is None
    assert rejection.reason.startswith("invalid JSON")


def test_bad_features_are_rejected_while_the_others_parse() -> None:
    doc = json.loads(NORTHWEST_JSON.read_text())
    features = doc["features"]
    bad_date_id = features[3]["properties"]["id"]
    features[3]["properties"]["expires"] = "2025-13-45T99:00:00Z"
    features[10]["properties"]["sent"] = "2025-12-15T21:53:00"  # no offset
    del features[20]["properties"]["id"]
    features[20]["id"] = None
    features[30]["properties"]["status"] = "Rumour"
    features[40]["properties"]["geocode"]["SAME"] = ["53033"]  # 5 digits
    features[50] = "not a feature"
    result = parse_alerts(json.dumps(doc), source="nw")
    assert len(result.alerts) == 69
    by_index = {r.index: r for r in result.rejected}
    assert sorted(by_index) == [3, 10, 20, 30, 40, 50]
    assert by_index[3].alert_id == bad_date_id and by_index[3].field == "expires"
    assert by_index[10].field == "sent" and "timezone" in by_index[10].reason
    assert by_index[20].alert_id == "" and by_index[20].field == "alert_id"
    assert by_index[30].field == "status" and "Rumour" in by_index[30].reason
    assert by_index[40].field == "same_codes"
    assert by_index[50].reason == "feature is not an object"
    assert all(r.source == "nw" for r in result.rejected)


def test_a_number_is_not_a_date() -> None:
    doc = json.loads(FINITY_JSON.read_text())
    doc["features"][0]["properties"]["sent"] = 1721332020
    result = parse_alerts(json.dumps(doc), source="epoch")
    assert [r.field for r in result.rejected] == ["sent"]
    assert len(result.alerts) == 1


def test_cap_alert_missing_identifier_is_rejected() -> None:
    text = FREEZE_XML.read_text()
    start, end = text.index("<identifier>"), text.index("</identifier>") + len("</identifier>")
    result = parse_alerts(text[:start] + text[end:], source="freeze")
    assert result.alerts == ()
    (rejection,) = result.rejected
    assert (rejection.field, rejection.alert_id, rejection.index) == ("alert_id", "", 0)


def test_bad_atom_entries_are_rejected_while_the_others_parse() -> None:
    head, *entries = ATOM_XML.read_text().split("<entry>")
    entries[0] = entries[0].replace("<cap:expires>2014-11-06T00:00:00-09:00</cap:expires>",
                                    "<cap:expires>Thursday</cap:expires>")
    entries[1] = entries[1].replace("<cap:event>High Wind Warning</cap:event>",
                                    "<cap:event></cap:event>")
    result = parse_alerts("<entry>".join([head, *entries]), source="atom")
    assert len(result.alerts) == 37
    assert [(r.index, r.field) for r in result.rejected] == [(0, "expires"), (1, "event")]
    assert all(r.alert_id.startswith("http://alerts.weather.gov/cap/") for r in result.rejected)
    assert "Thursday" in result.rejected[0].reason


def test_broken_and_foreign_documents() -> None:
    cases = {
        "": "empty document",
        "hello": "neither JSON nor XML",
        "[1, 2]": "not a GeoJSON object",
        '{"type": "Point", "coordinates": [0, 0]}': "not a GeoJSON FeatureCollection",
        "<alert><identifier>x": "invalid XML",
        "<rss/>": "not a CAP alert or Atom feed",
        '<!DOCTYPE a [<!ENTITY b "c">]><alert/>': "XML with a DOCTYPE",
    }
    for text, reason in cases.items():
        result = parse_alerts(text, source="s")
        assert result.alerts == ()
        assert [r.reason[: len(reason)] for r in result.rejected] == [reason], text


# --- expiry and actionability ------------------------------------------------------------------


def test_expiry_follows_expires_not_the_hazard_end() -> None:
    heat = _alert(FINITY_JSON)  # expires 07-19 03:00, hazard ends 07-20 20:00 (MST)
    before = datetime(2024, 7, 19, 2, 59, tzinfo=MST)
    after = datetime(2024, 7, 19, 3, 0, tzinfo=MST)
    assert not is_expired(heat, before) and is_actionable(heat, before)
    assert is_expired(heat, after) and not is_actionable(heat, after)
    assert not is_expired(heat, datetime(2024, 7, 19, 9, 59, tzinfo=UTC))  # same instant -1'
    only_ends = _variant(heat, expires=None)
    assert heat.ends is not None
    assert not is_expired(only_ends, after) and is_expired(only_ends, heat.ends)
    never = _variant(heat, expires=None, ends=None)
    assert not is_expired(never, datetime(2100, 1, 1, tzinfo=UTC))


def test_cancelled_test_and_exercise_alerts_are_not_actionable() -> None:
    heat = _alert(FINITY_JSON)
    now = datetime(2024, 7, 18, 13, 0, tzinfo=MST)
    assert is_actionable(heat, now)
    assert not is_actionable(_variant(heat, message_type="Cancel"), now)
    assert not is_actionable(_variant(heat, status="Test"), now)
    assert not is_actionable(_variant(heat, status="Exercise"), now)
    assert not is_actionable(_variant(heat, message_type="Ack"), now)


def test_naive_now_is_refused() -> None:
    with pytest.raises(FeedUsageError) as caught:
        is_expired(_alert(FINITY_JSON), datetime(2024, 7, 19))
    assert caught.value.field == "now"
    assert isinstance(caught.value, ShushError)


# --- incident tracking -------------------------------------------------------------------------


def test_tracker_roots_a_real_chain_at_its_earliest_reference() -> None:
    tracker = AlertTracker()
    watch = _alert(PYNWS_JSON)
    first = tracker.observe(watch)
    # the update lists four earlier alerts; the earliest-sent (12-18 12:29) is the incident
    assert first.incident_id == "NWS-IDP-PROD-3963421-3367361"
    assert first.is_new_incident and not first.is_repeat and not first.is_cancel
    # the same update again, from the second pynws file: recognised as a repeat
    again = tracker.observe(_alert(PYNWS_SECOND_JSON, 0))
    assert again.alert_id == watch.alert_id
    assert again.is_repeat and not again.is_new_incident
    assert again.incident_id == first.incident_id
    # an earlier alert of the chain arriving late joins the same incident
    middle = _variant(watch, alert_id="NWS-IDP-PROD-3965324-3368680", references=[
        {"alert_id": "NWS-IDP-PROD-3963421-3367361"}])
    assert tracker.observe(middle).incident_id == first.incident_id
    assert len(tracker) == 1


def test_tracker_update_then_cancel_chain() -> None:
    tracker = AlertTracker()
    heat = _alert(FINITY_JSON)
    seen = tracker.observe(heat)
    assert seen.incident_id == heat.reference_ids[0]  # the alert it updates was sent earlier
    update = _variant(heat, alert_id="urn:test:update-2", sent=heat.sent + timedelta(hours=6),
                      references=[{"alert_id": heat.alert_id, "sent": heat.sent}])
    cancel = _variant(heat, alert_id="urn:test:cancel-3", message_type="Cancel",
                      sent=heat.sent + timedelta(hours=9),
                      references=[{"alert_id": "urn:test:update-2"}])
    assert tracker.observe(update).incident_id == seen.incident_id
    cancelled = tracker.observe(cancel)
    assert cancelled.incident_id == seen.incident_id
    assert cancelled.is_cancel and not cancelled.is_new_incident
    assert tracker.is_cancelled(seen.incident_id)
    assert tracker.incident_of("urn:test:cancel-3") == seen.incident_id
    assert len(tracker) == 1


def test_tracker_groups_the_northwest_updates() -> None:
    tracker = AlertTracker()
    alerts = read_alerts(NORTHWEST_JSON).alerts
    sightings = [tracker.observe(a) for a in alerts]
    assert len(tracker) == 69  # 75 alerts; 5 + 3 updates share references
    sizes = Counter(s.incident_id for s in sightings)
    wind = "urn:oid:2.49.0.1.840.0.259eeb3efe1f1886c37902b2f2d4e7513e088b72.002.1"
    stagnation = "urn:oid:2.49.0.1.840.0.6a153a8fbc9db8f27d6195315bf66126b1ba5aa3.001.1"
    assert sizes[wind] == 5 and sizes[stagnation] == 3
    assert {a.event for a, s in zip(alerts, sightings, strict=True)
            if s.incident_id == wind} == {"High Wind Watch"}
    assert sum(s.is_new_incident for s in sightings) == 69


def test_tracker_merges_two_known_incidents_into_the_earlier() -> None:
    tracker = AlertTracker()
    heat, air = _alert(FINITY_JSON, 0), _alert(FINITY_JSON, 1)
    heat_incident = tracker.observe(heat).incident_id  # rooted 2024-07-18 01:14
    air_incident = tracker.observe(air).incident_id  # 08:13
    assert heat_incident != air_incident
    joint = _variant(air, alert_id="urn:test:joint", sent=air.sent + timedelta(hours=1),
                     message_type="Update",
                     references=[{"alert_id": air.alert_id}, {"alert_id": heat.alert_id}])
    sighting = tracker.observe(joint)
    assert sighting.incident_id == heat_incident
    assert sighting.merged_incident_ids == frozenset({air_incident})
    assert tracker.incident_of(air.alert_id) == heat_incident
    assert len(tracker) == 1


def test_tracker_prune_forgets_long_expired_incidents() -> None:
    tracker = AlertTracker()
    heat, air = _alert(FINITY_JSON, 0), _alert(FINITY_JSON, 1)
    tracker.observe(heat)  # expires 2024-07-19 03:00 MST
    tracker.observe(air)  # expires 2024-07-19 21:00 MST
    assert tracker.prune(datetime(2024, 7, 20, 4, 0, tzinfo=MST), keep_for=timedelta(hours=12)) == 1
    assert heat.alert_id not in tracker and air.alert_id in tracker
    assert tracker.observe(heat).is_new_incident
    with pytest.raises(FeedUsageError):
        tracker.prune(datetime(2024, 7, 20))


# --- reading files, directories and URLs -------------------------------------------------------


def test_read_directory_reads_every_sample() -> None:
    result = read_alerts(DATA_DIR)
    assert len(result.alerts) == sum(counts[0] for counts in SAMPLE_COUNTS.values()) == 121
    assert result.rejected == ()


def test_read_directory_keeps_going_past_a_bad_file(tmp_path: Path) -> None:
    (tmp_path / "a_good.json").write_bytes(FINITY_JSON.read_bytes())
    (tmp_path / "b_cut.json").write_text(FINITY_JSON.read_text()[:500])
    (tmp_path / "c_good.XML").write_bytes(FREEZE_XML.read_bytes())
    (tmp_path / "notes.txt").write_text("not an alert")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "nested.json").write_bytes(PYNWS_JSON.read_bytes())  # not recursed
    result = read_alerts(str(tmp_path))
    assert [a.event for a in result.alerts] == [
        "Excessive Heat Warning", "Air Quality Alert", "Hard Freeze Warning"]
    (rejection,) = result.rejected
    assert rejection.source == str(tmp_path / "b_cut.json")
    assert rejection.reason.startswith("invalid JSON")


def test_read_missing_location_raises() -> None:
    with pytest.raises(FeedUnavailable) as caught:
        read_alerts(DATA_DIR / "no-such-file.json")
    assert caught.value.source.endswith("no-such-file.json")
    with pytest.raises(FeedUsageError):
        read_alerts("ftp://example.invalid/alerts.xml")


class _SlowHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        time.sleep(1.0)
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _QuietFileHandler(SimpleHTTPRequestHandler):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, directory=str(DATA_DIR), **kwargs)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def loopback_server() -> Iterator[tuple[str, type[BaseHTTPRequestHandler]]]:
    """A local HTTP server in a thread (127.0.0.1 only; no outside network)."""
    servers: list[ThreadingHTTPServer] = []

    def start(handler: type[BaseHTTPRequestHandler]) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start  # type: ignore[misc]
    for server in servers:
        server.shutdown()
        server.server_close()


def test_read_url_over_loopback(loopback_server: Any) -> None:
    base = loopback_server(_QuietFileHandler)
    result = read_alerts(f"{base}/{FINITY_JSON.name}", timeout_s=5)
    assert [a.event for a in result.alerts] == ["Excessive Heat Warning", "Air Quality Alert"]
    with pytest.raises(FeedUnavailable, match="HTTP 404"):
        read_alerts(f"{base}/missing.json", timeout_s=5)
    with pytest.raises(FeedUnavailable, match="larger than"):
        read_alerts(f"{base}/{NORTHWEST_JSON.name}", timeout_s=5, max_bytes=100_000)


def test_read_url_timeout(loopback_server: Any) -> None:
    base = loopback_server(_SlowHandler)
    started = time.monotonic()
    with pytest.raises(FeedUnavailable) as caught:
        read_alerts(f"{base}/alerts", timeout_s=0.2)
    assert time.monotonic() - started < 0.9
    assert caught.value.source == f"{base}/alerts"


def test_public_surface_is_sorted() -> None:
    assert nws.__all__ == sorted(nws.__all__)
    assert all(hasattr(nws, name) for name in nws.__all__)
