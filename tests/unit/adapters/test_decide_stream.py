"""Decides over one gRPC stream (``DecideStream``): the real grpc.aio server in a thread in
front of a fake gateway, and the real ``AsyncShushClient`` and ``ShushClient``, which
multiplex their Decides through a router on that stream."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from shush.adapters.client import AsyncShushClient, ShushClient
from shush.adapters.grpc import shush_pb2 as pb
from shush.adapters.grpc import shush_pb2_grpc as pb_grpc
from shush.adapters.grpc.auth import hash_key
from shush.adapters.grpc.server import DECIDE_STREAM_WINDOW
from shush.engine.arbitration import Verdict
from shush.engine.config import GrpcConfig
from shush.engine.errors import BackpressureError, EngineUnavailable
from tests.unit.adapters.grpc_fakes import BackgroundServer, FakeGateway, serving


@dataclass
class SlowGateway(FakeGateway):
    """Answers each customer after ``delays_s[customer]`` (0 if not named); ``fail`` maps a
    customer to what its Decide raises, once."""

    delays_s: dict[str, float] = field(default_factory=dict)
    fail: dict[str, Exception] = field(default_factory=dict)
    deciding: int = 0
    most_at_once: int = 0

    async def decide(self, customer_id: str, channel: str | None, present: bool = False
                     ) -> tuple[Verdict, list[Any], str]:
        self.calls.append(("decide", customer_id))
        self.deciding += 1
        self.most_at_once = max(self.most_at_once, self.deciding)
        try:
            await asyncio.sleep(self.delays_s.get(customer_id, 0.0))
        finally:
            self.deciding -= 1
        if customer_id in self.fail:
            raise self.fail.pop(customer_id)
        return Verdict(customer_id, (), None), [], ""


def run(target: str, work: Callable[[AsyncShushClient], Awaitable[Any]], **settings: Any
        ) -> Any:
    async def go() -> Any:
        async with AsyncShushClient(target, **{"timeout_s": 5, "max_attempts": 1, **settings}
                                    ) as client:
            return await work(client)

    return asyncio.run(go())


def error_of(target: str, work: Callable[[AsyncShushClient], Awaitable[Any]], **settings: Any
             ) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        run(target, work, **settings)
    return info.value


def test_decides_in_flight_together_each_get_their_own_answer_in_any_order() -> None:
    # the first customers answer last: replies come back out of order on the stream
    gateway = SlowGateway(delays_s={f"c{i}": 0.2 - i * 0.01 for i in range(20)})
    with serving(GrpcConfig(), gateway) as (target, _):
        replies = run(target, lambda c: asyncio.gather(*(c.decide(f"c{i}", "web")
                                                         for i in range(40))),
                      connections=1)
    assert [r.customer_id for r in replies] == [f"c{i}" for i in range(40)]
    assert sorted(customer for _, customer in gateway.calls) == sorted(
        f"c{i}" for i in range(40))


def test_a_stream_has_at_most_its_window_of_decides_in_flight_and_answers_them_all() -> None:
    many = DECIDE_STREAM_WINDOW + 44
    gateway = SlowGateway(delays_s={f"c{i}": 0.2 for i in range(many)})
    with serving(GrpcConfig(), gateway) as (target, _):
        replies = run(target, lambda c: asyncio.gather(*(c.decide(f"c{i}")
                                                         for i in range(many))),
                      connections=1)
    assert len(replies) == many
    assert gateway.most_at_once == DECIDE_STREAM_WINDOW


def test_a_failed_decide_fails_alone_and_the_stream_goes_on() -> None:
    gateway = SlowGateway(fail={"boom": RuntimeError("scorer exploded"),
                                "gone": EngineUnavailable("shard 1 is gone", what="shard 1")})

    async def work(client: AsyncShushClient) -> list[Any]:
        return await asyncio.gather(client.decide("alice"), client.decide(""),
                                    client.decide("boom"), client.decide("gone"),
                                    client.decide("bob"), return_exceptions=True)

    with serving(GrpcConfig(), gateway) as (target, _):
        alice, missing, boom, gone, bob = run(target, work, connections=1)
        assert (alice.customer_id, bob.customer_id) == ("alice", "bob")
        assert missing.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "customer_id is missing" in missing.details()
        assert dict(missing.trailing_metadata()) == {"shush-field": "customer_id"}
        assert boom.code() == grpc.StatusCode.INTERNAL and "scorer exploded" in boom.details()
        assert gone.code() == grpc.StatusCode.UNAVAILABLE and "shard 1" in gone.details()
        # and the same client goes on deciding on its stream
        assert run(target, lambda c: c.decide("carol")).customer_id == "carol"


def test_a_busy_engine_says_when_to_retry_and_the_client_does() -> None:
    gateway = SlowGateway(fail={"alice": BackpressureError("shard full", retry_after_s=0.05)})
    with serving(GrpcConfig(), gateway) as (target, _):
        error = error_of(target, lambda c: c.decide("alice"))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert dict(error.trailing_metadata()) == {"retry-after-s": "0.050"}
        gateway.fail["alice"] = BackpressureError("shard full", retry_after_s=0.05)
        assert run(target, lambda c: c.decide("alice"), max_attempts=3).customer_id == "alice"
    assert [c for _, c in gateway.calls] == ["alice", "alice", "alice"]


def test_a_decide_past_its_timeout_fails_and_its_late_answer_is_dropped() -> None:
    gateway = SlowGateway(delays_s={"slow": 1.0})

    async def work(client: AsyncShushClient) -> tuple[Any, Any]:
        late = await asyncio.gather(client.decide("slow"), return_exceptions=True)
        await asyncio.sleep(1.0)  # its answer arrives now, for nobody
        return late[0], await client.decide("quick")

    with serving(GrpcConfig(), gateway) as (target, _):
        late, quick = run(target, work, timeout_s=0.3, connections=1)
    assert late.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert quick.customer_id == "quick"


def test_the_stream_asks_for_the_key_of_a_unary_decide() -> None:
    key = "sub-7f3a"
    config = GrpcConfig.model_validate({"security": {"api_keys": [
        {"name": "crm", "sha256": hash_key(key), "role": "submitter"}]}})
    with serving(config) as (target, gateway):
        assert error_of(target, lambda c: c.decide("alice")).code() == \
            grpc.StatusCode.UNAUTHENTICATED
        assert gateway.calls == []
        assert run(target, lambda c: c.decide("alice"), api_key=key).customer_id == "alice"


def test_a_malformed_message_ends_the_stream_with_invalid_argument() -> None:
    async def send_garbage(target: str) -> grpc.StatusCode:
        async with grpc.aio.insecure_channel(target) as channel:
            call = channel.stream_stream("/shush.v1.Shush/DecideStream")()
            await call.write(b"\xff\xff\xff")
            await call.done_writing()
            code: grpc.StatusCode = await call.code()
            return code

    with serving(GrpcConfig()) as (target, gateway):
        assert asyncio.run(send_garbage(target)) == grpc.StatusCode.INVALID_ARGUMENT
        assert gateway.calls == []


@dataclass
class TwoRouters:
    """Two routers' servers on one port: the first serves, and its Decide for "stuck" never
    ends; the second is to start once the first stops."""

    target: str
    first: SlowGateway
    second: SlowGateway
    first_server: BackgroundServer
    second_server: BackgroundServer

    def hand_over(self) -> None:
        self.first_server.stop(0.1)
        self.second_server.start()


@contextmanager
def two_routers() -> Iterator[TwoRouters]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = GrpcConfig(port=port)
    first, second = SlowGateway(delays_s={"stuck": 30.0}), SlowGateway()
    routers = TwoRouters(f"127.0.0.1:{port}", first, second, BackgroundServer(first, config),
                         BackgroundServer(second, config))
    routers.first_server.start()
    try:
        yield routers
    finally:
        routers.first_server.stop()
        routers.second_server.stop()
    assert (first.calls, second.calls) == ([("decide", "stuck")], [("decide", "stuck")])


def test_a_decide_in_flight_when_its_router_stops_is_answered_on_a_new_stream() -> None:
    with two_routers() as routers:
        async def work(client: AsyncShushClient) -> Any:
            stuck = asyncio.ensure_future(client.decide("stuck"))
            await asyncio.sleep(0.3)  # on the first router's stream, where it never ends
            await asyncio.get_running_loop().run_in_executor(None, routers.hand_over)
            return await stuck

        # retries past grpc's reconnection backoff (~1 s)
        answered = run(routers.target, work, connections=1, max_attempts=8, backoff_s=0.2)
    assert answered.customer_id == "stuck"


def test_the_stream_is_in_the_service_a_unary_decide_is_beside_it() -> None:
    async def both(target: str) -> tuple[str, str]:
        async with grpc.aio.insecure_channel(target) as channel:
            stub = pb_grpc.ShushStub(channel)
            unary = await stub.Decide(pb.DecideRequest(customer_id="alice"))
            call = stub.DecideStream()
            await call.write(pb.DecideCall(id=7, request=pb.DecideRequest(customer_id="bob")))
            outcome = await call.read()
            await call.done_writing()
            assert outcome.id == 7 and outcome.code == 0
            return unary.customer_id, outcome.reply.customer_id

    with serving(GrpcConfig()) as (target, _):
        assert asyncio.run(both(target)) == ("alice", "bob")


# The blocking client (``ShushClient``) on its own stream (``BlockingDecideStreamer``)

def blocking_error(target: str, customer: str, **settings: Any) -> Any:
    """What a blocking Decide raised: a ``grpc.RpcError`` with a code, details and metadata."""
    with ShushClient(target, **{"timeout_s": 5, "max_attempts": 1, **settings}) as client, \
            pytest.raises(grpc.RpcError) as info:
        client.decide(customer)
    return info.value


def test_blocking_decides_from_many_threads_share_one_stream_and_get_their_own_answers(
        ) -> None:
    gateway = SlowGateway(delays_s={f"c{i}": 0.2 - i * 0.01 for i in range(20)})
    with serving(GrpcConfig(), gateway) as (target, _), ShushClient(
            target, timeout_s=5, max_attempts=1, connections=1) as client, \
            ThreadPoolExecutor(max_workers=20) as threads:
        replies = list(threads.map(lambda i: client.decide(f"c{i}", "web"), range(20)))
        [streamer] = client._decide_streamers
        stream = streamer._stream
        assert client.decide("after").customer_id == "after"
        assert streamer._stream is stream  # the same stream goes on
    assert [r.customer_id for r in replies] == [f"c{i}" for i in range(20)]
    assert gateway.most_at_once == 20  # all in flight together, on one connection
    assert stream is not None and streamer._stream is None  # closed with the client
    assert not stream._reader.is_alive()


def test_a_failed_blocking_decide_fails_alone_with_what_a_unary_call_raises() -> None:
    gateway = SlowGateway(fail={"boom": RuntimeError("scorer exploded"),
                                "busy": BackpressureError("shard full", retry_after_s=0.05)})
    with serving(GrpcConfig(), gateway) as (target, _):
        missing = blocking_error(target, "")
        assert missing.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "customer_id is missing" in missing.details()
        assert dict(missing.trailing_metadata()) == {
            "shush-field": "customer_id"}
        boom = blocking_error(target, "boom")
        assert boom.code() == grpc.StatusCode.INTERNAL
        busy = blocking_error(target, "busy")
        assert busy.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert dict(busy.trailing_metadata()) == {
            "retry-after-s": "0.050"}
        gateway.fail["busy"] = BackpressureError("shard full", retry_after_s=0.05)
        with ShushClient(target, timeout_s=5, max_attempts=3, backoff_s=0.01) as client:
            assert client.decide("busy").customer_id == "busy"  # retried on the stream


def test_a_blocking_decide_past_its_timeout_fails_and_the_next_is_answered() -> None:
    gateway = SlowGateway(delays_s={"slow": 1.0})
    with serving(GrpcConfig(), gateway) as (target, _), ShushClient(
            target, timeout_s=0.3, max_attempts=1, connections=1) as client:
        with pytest.raises(grpc.RpcError) as info:
            client.decide("slow")
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        time.sleep(1.0)  # its answer arrives now, for nobody
        assert client.decide("quick").customer_id == "quick"


def test_the_blocking_stream_asks_for_the_key() -> None:
    key = "sub-7f3a"
    config = GrpcConfig.model_validate({"security": {"api_keys": [
        {"name": "crm", "sha256": hash_key(key), "role": "submitter"}]}})
    with serving(config) as (target, gateway):
        refused = blocking_error(target, "alice")
        assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
        assert gateway.calls == []
        with ShushClient(target, api_key=key, timeout_s=5) as client:
            assert client.decide("alice").customer_id == "alice"


def test_a_blocking_decide_in_flight_when_its_router_stops_is_answered_on_a_new_stream(
        ) -> None:
    # retries past grpc's reconnection backoff (~1 s)
    with two_routers() as routers, ShushClient(
            routers.target, connections=1, max_attempts=8, backoff_s=0.2,
            timeout_s=10) as client, ThreadPoolExecutor(max_workers=1) as thread:
        stuck = thread.submit(client.decide, "stuck")
        time.sleep(0.3)  # on the first router's stream, where it never ends
        routers.hand_over()
        assert stuck.result(timeout=20).customer_id == "stuck"
