"""The gRPC edge: API keys and roles, TLS and mutual TLS, request limits, RecordOutcome checks.

A real grpc.aio server in a thread, in front of a fake gateway that records what reached the
engine: every refusal must leave it untouched.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from pydantic import ValidationError

from shush.adapters.client import ShushClient
from shush.adapters.grpc import convert, limits
from shush.adapters.grpc import shush_pb2 as pb
from shush.adapters.grpc import shush_pb2_grpc as pb_grpc
from shush.adapters.grpc.auth import SUBMITTER_METHODS, KeyRing, allowed, hash_key
from shush.adapters.grpc.server import exposure_warnings, is_loopback
from shush.engine.config import GrpcConfig
from tests.unit.adapters.grpc_fakes import Certificates, FakeGateway, make_certificates, serving

SUBMITTER_KEY = "sub-7f3a"
OPERATOR_KEY = "op-91c2"
KEYS = [{"name": "crm", "sha256": hash_key(SUBMITTER_KEY), "role": "submitter"},
        {"name": "ops", "sha256": hash_key(OPERATOR_KEY), "role": "operator"}]
AUTH = GrpcConfig.model_validate({"security": {"api_keys": KEYS}})
EVENT = {"customer_id": "alice", "type": "savings_withdrawal", "attributes": {"amount": 1.0}}
SERVICE_METHODS = {m.name for m in pb.DESCRIPTOR.services_by_name["Shush"].methods}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def authed() -> Iterator[tuple[str, FakeGateway]]:
    with serving(AUTH) as served:
        yield served


def _code(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


def _client(target: str, **kwargs: Any) -> ShushClient:
    return ShushClient(target, timeout_s=5, max_attempts=1, **kwargs)


# -- roles ------------------------------------------------------------------------------------
def test_the_role_table_names_real_methods_and_closes_new_ones_by_default() -> None:
    assert SUBMITTER_METHODS <= SERVICE_METHODS
    assert SUBMITTER_METHODS == {"SubmitEvents", "SubmitPacked", "StreamEvents", "Decide",
                                 "DecideStream", "RecordOutcome", "Health", "Routes"}
    for method in SERVICE_METHODS | {"RunEmergency", "LoadCatalog"}:
        assert allowed("operator", method)
        assert allowed("submitter", method) == (method in SUBMITTER_METHODS)


def test_a_key_ring_knows_keys_by_their_hash_only() -> None:
    ring = KeyRing(AUTH.security.api_keys)
    assert ring.identify(SUBMITTER_KEY).name == "crm"  # type: ignore[union-attr]
    assert ring.identify(hash_key(SUBMITTER_KEY)) is None  # the hash is not the key
    assert ring.check([("authorization", f"bearer {OPERATOR_KEY}")], "SetLever").name == "ops"


def test_without_a_key_every_call_is_unauthenticated_and_nothing_changes(
        authed: tuple[str, FakeGateway]) -> None:
    target, gateway = authed
    with _client(target) as client:
        for call in (lambda: client.submit([EVENT]), lambda: client.health(),
                     lambda: client.set_lever("x", 2.0), lambda: client.stream([EVENT]),
                     lambda: client.record_outcome("t", "alice", "opened")):
            code, details = _code(call)
            assert code == grpc.StatusCode.UNAUTHENTICATED
            assert "authorization: Bearer" in details
    assert gateway.calls == []


@pytest.mark.parametrize("header", ["Bearer wrong-key", "Basic c3ViOjdmM2E=", SUBMITTER_KEY])
def test_wrong_or_malformed_credentials_are_unauthenticated(
        authed: tuple[str, FakeGateway], header: str) -> None:
    target, gateway = authed
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.ShushStub(channel)
        code, details = _code(lambda: stub.SubmitEvents(
            pb.EventBatch(events=[pb.Event(event_id="e", customer_id="c", type="t")]),
            metadata=(("authorization", header),), timeout=5))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert "SubmitEvents" in details
    assert gateway.calls == []


def test_a_submitter_submits_decides_reports_outcomes_but_sets_no_lever(
        authed: tuple[str, FakeGateway]) -> None:
    target, gateway = authed
    with _client(target, api_key=SUBMITTER_KEY) as client:
        assert client.submit([EVENT]).accepted == 1
        assert client.stream([EVENT]).accepted == 1
        assert client.decide("alice").customer_id == "alice"
        assert client.record_outcome("t1", "alice", "clicked").accepted == 1
        assert client.health()[0] is True
        before = list(gateway.calls)
        for call in (lambda: client.set_lever("rate_offer", 9.0), lambda: client.levers(),
                     lambda: client.explain("alice"), lambda: client.checkpoint()):
            code, details = _code(call)
            assert code == grpc.StatusCode.PERMISSION_DENIED
            assert "operator" in details and "'crm'" in details
    assert gateway.calls == before
    assert gateway.lever_values == {}


def test_an_operator_may_call_everything(authed: tuple[str, FakeGateway]) -> None:
    target, _ = authed
    with _client(target, api_key=OPERATOR_KEY) as client:
        assert client.set_lever("rate_offer", 2.5) == {"rate_offer": 2.5}
        assert client.levers() == {"rate_offer": 2.5}
        assert client.explain("alice") == []
        assert client.checkpoint() == 7  # every shard's customers saved
        assert client.submit([EVENT]).accepted == 1


def test_without_configured_keys_auth_is_off() -> None:
    with serving(GrpcConfig()) as (target, _), _client(target) as client:
        assert client.set_lever("rate_offer", 1.5) == {"rate_offer": 1.5}


# -- configuration and exposure ------------------------------------------------------------
@pytest.mark.parametrize("security", [
    {"tls_cert_path": "cert.pem"},
    {"tls_client_ca_path": "ca.pem"},
    {"api_keys": [{"name": "a", "sha256": "not-a-hash", "role": "submitter"}]},
    {"api_keys": [{"name": "a", "sha256": hash_key("k"), "role": "admin"}]},
    {"api_keys": [KEYS[0], {**KEYS[1], "name": "crm"}]},
    {"api_keys": [KEYS[0], {**KEYS[1], "sha256": KEYS[0]["sha256"]}]},
])
def test_invalid_security_settings_are_refused(security: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        GrpcConfig.model_validate({"security": security})


def test_binding_beyond_loopback_without_keys_or_tls_warns() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("shush.example.com")
    assert exposure_warnings(GrpcConfig()) == []
    open_wide = exposure_warnings(GrpcConfig(host="0.0.0.0"))
    assert len(open_wide) == 2
    assert "NO API KEYS" in open_wide[0] and "without TLS" in open_wide[1]
    keyed = GrpcConfig.model_validate({"host": "0.0.0.0", "security": {
        "api_keys": KEYS, "tls_cert_path": "c.pem", "tls_key_path": "k.pem"}})
    assert exposure_warnings(keyed) == []


# -- TLS ------------------------------------------------------------------------------------
def _tls(certs: Certificates, *, mutual: bool = False, keys: bool = False) -> GrpcConfig:
    security: dict[str, Any] = {"tls_cert_path": str(certs.server_cert),
                                "tls_key_path": str(certs.server_key)}
    if mutual:
        security["tls_client_ca_path"] = str(certs.ca)
    if keys:
        security["api_keys"] = KEYS
    return GrpcConfig.model_validate({"security": security})


def test_tls_serves_a_client_that_trusts_the_ca_and_no_plain_client(
        certs: Certificates) -> None:
    with serving(_tls(certs, keys=True)) as (target, gateway):
        with _client(target, root_certificates=certs.ca, api_key=SUBMITTER_KEY) as client:
            assert client.submit([EVENT]).accepted == 1
        with _client(target, api_key=SUBMITTER_KEY) as plain:
            assert _code(lambda: plain.health())[0] == grpc.StatusCode.UNAVAILABLE
        with _client(target, root_certificates=certs.other_ca.read_bytes(),
                     api_key=SUBMITTER_KEY) as distrustful:
            assert _code(lambda: distrustful.health())[0] == grpc.StatusCode.UNAVAILABLE
    assert len(gateway.calls) == 1


def test_mutual_tls_needs_a_client_certificate(certs: Certificates) -> None:
    with serving(_tls(certs, mutual=True)) as (target, _):
        with _client(target, root_certificates=certs.ca, client_certificate=certs.client_cert,
                     client_key=certs.client_key) as client:
            assert client.health()[0] is True
        with _client(target, root_certificates=certs.ca) as anonymous:
            assert _code(lambda: anonymous.health())[0] == grpc.StatusCode.UNAVAILABLE


def test_a_missing_certificate_file_fails_at_start(tmp_path: Path) -> None:
    config = GrpcConfig.model_validate({"security": {
        "tls_cert_path": str(tmp_path / "none.pem"), "tls_key_path": str(tmp_path / "k")}})
    with pytest.raises(Exception, match="cannot read a TLS file"), serving(config):
        pass


# -- limits ---------------------------------------------------------------------------------
SMALL = GrpcConfig(max_events_per_request=3, max_attributes_per_event=2, max_string_chars=20,
                   max_message_bytes=4096)


def _submit_refused(events: list[dict[str, Any]]) -> tuple[grpc.StatusCode, str]:
    with serving(SMALL) as (target, gateway), _client(target) as client:
        refused = _code(lambda: client.submit(events))
        assert gateway.calls == []  # nothing of the request was taken
    return refused


@pytest.mark.parametrize(("events", "field"), [
    ([EVENT] * 4, "events:"),
    ([EVENT, {**EVENT, "attributes": {"a": 1, "b": 2, "c": 3}}], "events[1].attributes:"),
    ([{**EVENT, "attributes": {"note": "x" * 21}}], "events[0].attributes.note:"),
    ([{**EVENT, "attributes": {"n" * 21: 1.0}}], "events[0].attributes:"),
    ([{**EVENT, "type": "t" * 21}], "events[0].type:"),
    ([{**EVENT, "source": "s" * 21}], "events[0].source:"),
])
def test_a_request_over_a_limit_is_refused_whole_naming_the_field(
        events: list[dict[str, Any]], field: str) -> None:
    code, details = _submit_refused(events)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith(field)


@pytest.mark.parametrize(("event", "field", "reason"), [
    ({**EVENT, "attributes": {"a": 1.0, "b": 2.0, "c": 3.0}}, "events[1].attributes",
     "3 attributes, at most 2"),
    ({**EVENT, "attributes": {"note": "x" * 21}}, "events[1].attributes.note",
     "21 characters, at most 20"),
    ({**EVENT, "attributes": {"n" * 22: 1.0}}, "events[1].attributes", "22 characters"),
    ({**EVENT, "type": "t" * 21}, "events[1].type", "21 characters"),
    ({**EVENT, "source": "s" * 23}, "events[1].source", "23 characters, at most 20"),
])
def test_both_request_forms_name_the_field_and_the_limit_broken(
        event: dict[str, Any], field: str, reason: str) -> None:
    wire = [["e1", "alice", "savings_withdrawal", 0, "", {"amount": 1.0}],
            ["e2", event["customer_id"], event["type"], 0, event.get("source", ""),
             event["attributes"]]]
    proto = [convert.event_to_proto(dict(zip(
        ("event_id", "customer_id", "type", "occurred_at_ms", "source", "attributes"), e,
        strict=True))) for e in wire]
    for check, events in ((limits.check_wire_events, wire), (limits.check_events, proto)):
        with pytest.raises(limits.RequestRejected) as refused:
            check(events, SMALL)
        assert refused.value.field == field and reason in refused.value.reason
    limits.check_wire_events(wire[:1], SMALL)
    limits.check_events(proto[:1], SMALL)


def test_packed_events_reach_the_gateway_as_sent_and_garbage_is_refused() -> None:
    with serving(GrpcConfig()) as (target, gateway), _client(target) as client:
        result = client.submit([EVENT, {**EVENT, "event_id": "e2"}])
        garbage = _code(lambda: client._stub().SubmitPacked(pb.PackedEvents(events=b"\xc1"),
                                                          timeout=5))
    assert result.accepted == 2
    [(method, events)] = gateway.calls
    assert method == "submit" and len(events[0][0]) == 32 and events[1][0] == "e2"
    assert events[0][1:3] == ["alice", "savings_withdrawal"] and events[0][3] > 0
    assert events[0][4:] == ["", {"amount": 1.0}]
    assert garbage[0] == grpc.StatusCode.INVALID_ARGUMENT and garbage[1].startswith("events:")


def test_a_message_over_the_byte_limit_is_refused_by_grpc() -> None:
    code, details = _submit_refused([{**EVENT, "customer_id": "c" * 5000}])
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in details


def test_a_stream_refuses_an_oversized_batch() -> None:
    with serving(SMALL) as (target, gateway), _client(target, batch_size=4) as client:
        code, details = _code(lambda: client.stream([EVENT] * 4))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("events:")
    assert gateway.calls == []


# -- RecordOutcome at the edge --------------------------------------------------------------
def test_outcomes_reach_the_gateway_as_wire_lists() -> None:
    with serving(GrpcConfig()) as (target, gateway), _client(target, batch_size=2) as client:
        result = client.record_outcomes([
            {"treatment_id": "t1", "customer_id": "alice", "outcome": "delivered", "at_ms": 5},
            {"treatment_id": "t1", "customer_id": "alice", "outcome": "accepted", "at_ms": 6},
            {"treatment_id": "t2", "customer_id": "bob", "outcome": "rejected", "at_ms": 7}])
    assert (result.accepted, result.rejected) == (3, [])
    assert gateway.calls == [
        ("record_outcomes", [["t1", "alice", "delivered", 5], ["t1", "alice", "accepted", 6]]),
        ("record_outcomes", [["t2", "bob", "rejected", 7]])]


@pytest.mark.parametrize(("outcome", "field"), [
    ({"outcome": "exploded"}, "outcomes[1].outcome"),
    ({"outcome": "ignored"}, "outcomes[1].outcome"),  # the engine's verdict, not a report
    ({"treatment_id": ""}, "outcomes[1].treatment_id"),
    ({"customer_id": "c" * 129}, "outcomes[1].customer_id"),
    ({"at_ms": -1}, "outcomes[1].at_ms"),
])
def test_an_invalid_outcome_is_refused_naming_the_field(outcome: dict[str, Any],
                                                        field: str) -> None:
    good = {"treatment_id": "t1", "customer_id": "alice", "outcome": "opened", "at_ms": 5}
    with serving(GrpcConfig()) as (target, gateway), _client(target) as client:
        code, details = _code(lambda: client.record_outcomes([good, {**good, **outcome}]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith(f"{field}:")
    assert gateway.calls == []


def test_too_many_outcomes_are_refused() -> None:
    good = {"treatment_id": "t1", "customer_id": "alice", "outcome": "opened", "at_ms": 5}
    with serving(SMALL) as (target, gateway), _client(target, batch_size=10) as client:
        code, details = _code(lambda: client.record_outcomes([good] * 4))
    assert (code, details.split(":")[0]) == (grpc.StatusCode.INVALID_ARGUMENT, "outcomes")
    assert gateway.calls == []


def test_no_outcomes_is_no_call() -> None:
    from shush.adapters.client import ShushClient

    with ShushClient("127.0.0.1:9") as client:  # nothing listens: a call would fail
        result = client.record_outcomes([])
    assert (result.accepted, result.rejected) == (0, [])
