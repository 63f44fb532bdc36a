"""The frames edge: the gRPC service's unary calls over length-prefixed frames, beside gRPC.

A real frames server (and gRPC server) in a thread, in front of a fake gateway that records
what reached the engine; the real ``AsyncShushClient`` with ``frames_target``, or raw bytes
on a socket for what no client would send.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

from shush.adapters.client import AsyncShushClient, ShushClient
from shush.adapters.frames import wire
from shush.adapters.grpc import shush_pb2 as pb
from shush.adapters.grpc.auth import hash_key
from shush.engine import codec
from shush.engine.config import GrpcConfig
from shush.engine.errors import BackpressureError
from tests.unit.adapters.grpc_fakes import (
    Certificates,
    FakeGateway,
    make_certificates,
    serving_both,
)

SUBMITTER_KEY = "sub-7f3a"
OPERATOR_KEY = "op-91c2"
KEYS = [{"name": "crm", "sha256": hash_key(SUBMITTER_KEY), "role": "submitter"},
        {"name": "ops", "sha256": hash_key(OPERATOR_KEY), "role": "operator"}]
FRAMES = GrpcConfig(frames_port=0)
EVENT = {"customer_id": "alice", "type": "savings_withdrawal", "attributes": {"amount": 1.0}}


def run(frames: str, work: Callable[[AsyncShushClient], Awaitable[Any]], **settings: Any
        ) -> Any:
    async def go() -> Any:
        async with AsyncShushClient("127.0.0.1:1", frames_target=frames, timeout_s=5,
                                    max_attempts=1, **settings) as client:
            return await work(client)

    return asyncio.run(go())


def code_of(frames: str, work: Callable[[AsyncShushClient], Awaitable[Any]],
            **settings: Any) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        run(frames, work, **settings)
    error = info.value
    return error.code(), error.details() or "", dict(error.trailing_metadata() or ())


# -- the framing ------------------------------------------------------------------------------
def test_a_reader_cuts_frames_fed_a_byte_at_a_time() -> None:
    stream = wire.frame(1, b"abc") + wire.frame(7, b"") + wire.frame(2**32 - 1, b"x" * 300)
    reader = wire.FrameReader(1000)
    frames = [f for i in range(len(stream)) for f in reader.feed(stream[i:i + 1])]
    assert frames == [(1, b"abc"), (7, b""), (2**32 - 1, b"x" * 300)]


def test_a_frame_over_the_limit_is_skipped_and_the_next_one_read() -> None:
    stream = wire.frame(1, b"y" * 50) + wire.frame(2, b"ok")
    reader = wire.FrameReader(10)
    assert reader.feed(stream[:20]) == [(1, wire.Oversized(50))]
    assert reader.feed(stream[20:]) == [(2, b"ok")]


@pytest.mark.parametrize(("body", "named"), [
    (b"\xc1", "not msgpack"),
    (codec.pack(codec.EVENTS, []), "a request is"),  # msgpack, of the wrong shape
    (b"\x93\x01\x90\xc4\x00", "method: str"),  # [1, [], b""]
    (b"\x93\xa6Decide\x91\x01\xc4\x00", "metadata must be"),
])
def test_a_malformed_request_body_is_named(body: bytes, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        wire.parse_request(body)


# -- calls through the client -----------------------------------------------------------------
def test_the_hot_calls_reach_the_gateway_over_frames_and_not_over_grpc() -> None:
    with serving_both(FRAMES) as (_, frames, gateway):
        async def work(client: AsyncShushClient) -> Any:
            submitted = await client.submit([EVENT, dict(EVENT, customer_id="bob")])
            decided = await client.decide("alice", "web")
            outcomes = await client.record_outcomes([{"treatment_id": "t1",
                                                      "customer_id": "alice",
                                                      "outcome": "accepted"}])
            return submitted, decided, outcomes, await client.health()

        submitted, decided, outcomes, (serving, _) = run(frames, work)
    assert (submitted.accepted, decided.customer_id, outcomes.accepted, serving) == (
        2, "alice", 1, True)
    # no shard serves calls here (Routes names none): they go through the router
    assert [kind for kind, _ in gateway.calls] == ["routes", "submit", "decide",
                                                  "record_outcomes"]
    assert [e[1] for e in gateway.calls[1][1]] == ["alice", "bob"]  # wire events, in order


def test_calls_on_one_connection_run_concurrently() -> None:
    with serving_both(FRAMES) as (_, frames, gateway):
        async def work(client: AsyncShushClient) -> list[str]:
            replies = await asyncio.gather(*(client.decide(f"c{i}") for i in range(50)))
            return [r.customer_id for r in replies]

        assert run(frames, work, connections=1) == [f"c{i}" for i in range(50)]
    assert [kind for kind, _ in gateway.calls] == ["routes"] + ["decide"] * 50


def test_keys_and_roles_are_checked_per_call_before_anything_reaches_the_engine() -> None:
    config = GrpcConfig.model_validate({"frames_port": 0, "security": {"api_keys": KEYS}})
    with serving_both(config) as (_, frames, gateway):
        denied = code_of(frames, lambda c: c.decide("alice"))
        assert denied[0] == grpc.StatusCode.UNAUTHENTICATED
        assert "missing credential" in denied[1]
        assert code_of(frames, lambda c: c.decide("alice"), api_key="wrong")[0] == \
            grpc.StatusCode.UNAUTHENTICATED
        lever = code_of(frames, lambda c: c.set_lever("offer", 2.0), api_key=SUBMITTER_KEY)
        assert lever[0] == grpc.StatusCode.PERMISSION_DENIED
        assert "needs the operator role" in lever[1]
        assert gateway.calls == []
        assert run(frames, lambda c: c.decide("alice"), api_key=SUBMITTER_KEY).customer_id == \
            "alice"
        assert run(frames, lambda c: c.set_lever("offer", 2.0), api_key=OPERATOR_KEY) == {
            "offer": 2.0}


def test_a_request_over_a_limit_is_refused_whole_naming_the_field() -> None:
    config = GrpcConfig(frames_port=0, max_events_per_request=2)
    with serving_both(config) as (_, frames, gateway):
        code, details, _ = code_of(frames, lambda c: c.submit([EVENT] * 3))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "events" in details and "at most 2" in details
    assert [kind for kind, _ in gateway.calls] == ["routes"]  # no submit reached the engine


class FullGateway(FakeGateway):
    async def submit(self, events: list[list[Any]], arrived_s: float | None = None,
                     packed: bytes | None = None) -> list[list[Any]]:
        raise BackpressureError("router is full", retry_after_s=0.25)


def test_a_full_engine_answers_resource_exhausted_with_a_retry_after() -> None:
    with serving_both(FRAMES, FullGateway()) as (_, frames, _gateway):
        code, _, trailing = code_of(frames, lambda c: c.submit([EVENT]))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert trailing["retry-after-s"] == "0.250"


def test_streaming_stays_on_grpc_and_the_blocking_client_refuses_frames() -> None:
    with serving_both(FRAMES) as (target, frames, gateway):
        async def go() -> int:
            async def events() -> Any:
                yield EVENT

            async with AsyncShushClient(target, frames_target=frames, timeout_s=5) as client:
                return (await client.stream(events())).accepted

        assert asyncio.run(go()) == 1
    assert [kind for kind, _ in gateway.calls] == ["submit"]
    with pytest.raises(ValueError, match="AsyncShushClient"):
        ShushClient("127.0.0.1:1", frames_target="127.0.0.1:2")


def test_a_lost_server_is_unavailable_and_the_next_call_connects_again() -> None:
    async def go() -> tuple[grpc.StatusCode, str]:
        async with AsyncShushClient("127.0.0.1:1", frames_target="127.0.0.1:1", timeout_s=5,
                                    max_attempts=1) as client:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await client.decide("alice")
            return info.value.code(), info.value.details() or ""

    code, details = asyncio.run(go())
    assert code == grpc.StatusCode.UNAVAILABLE and "cannot connect" in details


# -- what no client sends ---------------------------------------------------------------------
async def _raw(frames: str, *sent: bytes) -> list[tuple[int, int, str]]:
    """Send raw frames on one connection; read one reply per frame: (call id, code,
    details)."""
    host, port = frames.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        for data in sent:
            writer.write(data)
        await writer.drain()
        replies = []
        for _ in sent:
            length, call_id = wire.HEADER.unpack(await reader.readexactly(wire.HEADER.size))
            code, details, _, _ = wire.parse_reply(await reader.readexactly(length))
            replies.append((call_id, code, details))
        return sorted(replies)
    finally:
        writer.close()


def test_bad_frames_are_answered_by_name_and_the_connection_keeps_serving() -> None:
    config = GrpcConfig(frames_port=0, max_message_bytes=1024)
    decide = pb.DecideRequest(customer_id="alice").SerializeToString()
    with serving_both(config) as (_, frames, gateway):
        replies = asyncio.run(_raw(
            frames,
            wire.frame(1, b"\xc1"),
            wire.request_frame(2, "Nope", (), b""),
            wire.request_frame(3, "Decide", (), b"\xff\xff"),
            wire.frame(4, b"z" * (1024 + wire.ENVELOPE_BYTES + 1)),
            wire.request_frame(5, "Decide", (), decide)))
    invalid, unimplemented, exhausted = (grpc.StatusCode.INVALID_ARGUMENT.value[0],
                                         grpc.StatusCode.UNIMPLEMENTED.value[0],
                                         grpc.StatusCode.RESOURCE_EXHAUSTED.value[0])
    assert [(i, c) for i, c, _ in replies] == [(1, invalid), (2, unimplemented), (3, invalid),
                                              (4, exhausted), (5, 0)]
    assert "malformed frame: not msgpack" in replies[0][2]
    assert "'Nope'" in replies[1][2]
    assert "Decide: malformed request message" in replies[2][2]
    assert "over the limit" in replies[3][2]
    assert gateway.calls == [("decide", "alice")]


# -- TLS ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


def test_tls_and_mutual_tls_are_the_grpc_edge_settings(certs: Certificates) -> None:
    config = GrpcConfig.model_validate({"frames_port": 0, "security": {
        "tls_cert_path": str(certs.server_cert), "tls_key_path": str(certs.server_key),
        "tls_client_ca_path": str(certs.ca)}})
    with serving_both(config) as (_, frames, _gateway):
        trusted = run(frames, lambda c: c.decide("alice"), root_certificates=certs.ca,
                      client_certificate=certs.client_cert, client_key=certs.client_key)
        assert trusted.customer_id == "alice"
        assert code_of(frames, lambda c: c.decide("alice"), root_certificates=certs.ca)[0] == \
            grpc.StatusCode.UNAVAILABLE  # no client certificate
        assert code_of(frames, lambda c: c.decide("alice"), root_certificates=certs.other_ca,
                       client_certificate=certs.client_cert,
                       client_key=certs.client_key)[0] == grpc.StatusCode.UNAVAILABLE
