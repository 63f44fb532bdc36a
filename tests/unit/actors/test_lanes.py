"""Lanes without Ray: a shard's socket server and its callers, in one process."""

from __future__ import annotations

import asyncio
import os
import stat
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from shush.actors import lanes
from shush.actors.lanes import ActorLanes, LaneClient, LaneHost, LaneServer, lane_directory
from shush.actors.ray_calls import ActorDirectory
from shush.engine.errors import EngineUnavailable, RequestRejected

Scenario = Callable[[LaneServer], Awaitable[None]]
LANED = frozenset({"submit", "decide"})


async def _echo(method: str, args: list[Any]) -> Any:
    if method == "fail":
        raise ValueError(f"cannot {args[0]}")
    if method == "reject":
        raise RequestRejected("no such channel", field="channel")
    if method == "grow":
        return args[0] * 2
    if method == "sleep":
        await asyncio.sleep(args[0])
    return [method, args]


def _serve(tmp_path: Path, scenario: Scenario) -> None:
    async def run() -> None:
        server = LaneServer(_echo, what="shard-3", directory=str(tmp_path))
        await server.start()
        try:
            await scenario(server)
        finally:
            server.close()
    asyncio.run(run())


async def _client(server: LaneServer, timeout_s: float = 5.0) -> LaneClient:
    return await LaneClient.connect(server.path, what="shard-3", timeout_s=timeout_s)


def test_a_call_returns_what_the_shard_answered(tmp_path: Path) -> None:
    async def scenario(server: LaneServer) -> None:
        client = await _client(server)
        assert await client.call("submit", [b"\x00batch", [1.5, None]], timeout_s=5) == [
            "submit", [b"\x00batch", [1.5, None]]]
        assert Path(server.path).name == f"shard-3.{os.getpid()}.sock"
    _serve(tmp_path, scenario)


def test_replies_come_back_in_any_order(tmp_path: Path) -> None:
    async def scenario(server: LaneServer) -> None:
        client = await _client(server)
        slow = asyncio.create_task(client.call("sleep", [0.2], timeout_s=5))
        await asyncio.sleep(0.01)
        assert await client.call("decide", ["c1"], timeout_s=5) == ["decide", ["c1"]]
        assert not slow.done()  # the Decide did not wait behind the slow call
        assert await slow == ["sleep", [0.2]]
    _serve(tmp_path, scenario)


def test_a_shush_error_reaches_the_caller_as_itself(tmp_path: Path) -> None:
    async def scenario(server: LaneServer) -> None:
        client = await _client(server)
        with pytest.raises(RequestRejected, match="no such channel"):
            await client.call("reject", [], timeout_s=5)
    _serve(tmp_path, scenario)


def test_any_other_error_names_the_shard_and_the_error(tmp_path: Path) -> None:
    async def scenario(server: LaneServer) -> None:
        client = await _client(server)
        with pytest.raises(RuntimeError, match="shard-3 failed: ValueError: cannot fly"):
            await client.call("fail", ["fly"], timeout_s=5)
        assert await client.call("decide", [], timeout_s=5) == ["decide", []]  # still open
    _serve(tmp_path, scenario)


def test_calls_in_flight_fail_at_once_when_the_lane_is_lost(tmp_path: Path) -> None:
    async def scenario(server: LaneServer) -> None:
        client = await _client(server)
        waiting = asyncio.create_task(client.call("sleep", [30], timeout_s=30))
        await asyncio.sleep(0.05)
        server.close()  # as a killed shard's process closes its end
        with pytest.raises(EngineUnavailable, match="lane lost"):
            await asyncio.wait_for(waiting, 2)  # not after the call's 30 s
        assert client.closed
        with pytest.raises(EngineUnavailable, match="lane closed"):
            await client.call("decide", [], timeout_s=5)
    _serve(tmp_path, scenario)


def test_a_silent_shard_times_out_and_a_late_reply_is_dropped(tmp_path: Path) -> None:
    async def scenario(server: LaneServer) -> None:
        client = await _client(server)
        with pytest.raises(EngineUnavailable, match=r"shard-3.sleep: no answer within 0.05s"):
            await client.call("sleep", [0.2], timeout_s=0.05)
        await asyncio.sleep(0.3)  # its reply lands now, for nobody
        assert await client.call("decide", [], timeout_s=5) == ["decide", []]
    _serve(tmp_path, scenario)


def test_a_missing_socket_is_unreachable(tmp_path: Path) -> None:
    async def scenario() -> None:
        with pytest.raises(EngineUnavailable, match="shard-3: lane unreachable"):
            await LaneClient.connect(str(tmp_path / "gone.sock"), what="shard-3", timeout_s=1)
    asyncio.run(scenario())


def test_a_bad_frame_closes_only_its_own_connection(tmp_path: Path) -> None:
    async def scenario(server: LaneServer) -> None:
        good = await _client(server)
        reader, writer = await asyncio.open_unix_connection(server.path)
        writer.write(struct.pack("<I", 3) + b"\xc1\xc1\xc1")  # 0xc1: never valid msgpack
        assert await asyncio.wait_for(reader.read(), 2) == b""  # closed by the shard
        writer.write(struct.pack("<I", 2**31))  # a length no batch has
        writer.close()
        assert await good.call("decide", ["c1"], timeout_s=5) == ["decide", ["c1"]]
    _serve(tmp_path, scenario)


def test_sockets_of_processes_that_are_gone_are_removed(tmp_path: Path) -> None:
    orphan = tmp_path / "shard-1.999999999.sock"
    alive = tmp_path / f"shard-2.{os.getppid()}.sock"
    other = tmp_path / "notes.txt"
    for path in (orphan, alive, other):
        path.write_text("")

    async def scenario(server: LaneServer) -> None:
        assert not orphan.exists()
        assert alive.exists() and other.exists()
    _serve(tmp_path, scenario)


def test_the_lane_directory_is_this_users_alone(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)
    path = Path(lane_directory())
    assert path.parent == tmp_path
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    path.chmod(0o755)  # someone opened it up: refuse to serve there
    with pytest.raises(PermissionError, match="mode 0700"):
        lane_directory()


class FakeShards(ActorDirectory):
    """Ray's side: answers ``lane`` with a node and a path, and every other call itself."""

    def __init__(self, node: str, path: str) -> None:
        super().__init__("shard", 1, "test")
        self.node = node
        self.path = path
        self.calls: list[str] = []

    async def call(self, index: int, method: str, *args: Any, timeout_s: float) -> Any:
        self.calls.append(method)
        if method == "lane":
            return [self.node, self.path]
        return ["ray", method]


def test_lane_methods_take_the_lane_on_the_same_node_and_the_rest_take_ray(
        tmp_path: Path) -> None:
    async def scenario(server: LaneServer) -> None:
        ray_side = FakeShards("node-a", server.path)
        shards = ActorLanes(ray_side, LANED, node_id=lambda: "node-a")
        assert await shards.call(0, "submit", b"b", None, timeout_s=5) == ["submit", [b"b", None]]
        assert await shards.call(0, "decide", "c1", timeout_s=5) == ["decide", ["c1"]]
        assert await shards.call(0, "explain", "c1", timeout_s=5) == ["ray", "explain"]
        assert ray_side.calls == ["lane", "explain"]  # asked once where the lane is
    _serve(tmp_path, scenario)


def test_a_shard_on_another_node_is_called_through_ray(tmp_path: Path) -> None:
    async def scenario(server: LaneServer) -> None:
        ray_side = FakeShards("node-b", server.path)
        shards = ActorLanes(ray_side, LANED, node_id=lambda: "node-a")
        for _ in range(2):
            assert await shards.call(0, "submit", b"b", timeout_s=5) == ["ray", "submit"]
        assert ray_side.calls == ["lane", "submit", "submit"]
    _serve(tmp_path, scenario)


def test_after_a_lost_lane_the_caller_asks_ray_again(tmp_path: Path) -> None:
    async def run() -> None:
        first = LaneServer(_echo, what="shard-0", directory=str(tmp_path / "a"))
        second = LaneServer(_echo, what="shard-0", directory=str(tmp_path / "b"))
        for server in (first, second):
            os.makedirs(server.directory)
            await server.start()
        ray_side = FakeShards("node-a", first.path)
        shards = ActorLanes(ray_side, LANED, node_id=lambda: "node-a")
        assert await shards.call(0, "decide", "c1", timeout_s=5) == ["decide", ["c1"]]
        first.close()  # the shard died; Ray restarts it with a lane of its own
        ray_side.path = second.path
        await asyncio.sleep(0.05)
        assert await shards.call(0, "decide", "c2", timeout_s=5) == ["decide", ["c2"]]
        assert ray_side.calls == ["lane", "lane"]
        second.close()
    asyncio.run(run())


def test_a_host_serves_its_actors_laned_methods_and_names_them_for_any_other(
        tmp_path: Path) -> None:
    class Actor:
        async def submit(self, batch: bytes) -> bytes:
            return batch[::-1]

        async def health(self) -> str:
            return "not over a lane"

    async def run() -> None:
        host = LaneHost(Actor(), frozenset({"submit"}), what="shard-1",
                        directory=str(tmp_path), node_id=lambda: "node-a")
        assert host.served() == {}
        node, path = await host.where()
        assert (node, await host.where()) == ("node-a", [node, path])  # one server
        client = await LaneClient.connect(path, what="shard-1", timeout_s=5)
        assert await client.call("submit", [b"abc"], timeout_s=5) == b"cba"
        with pytest.raises(RuntimeError, match=r"no such lane method 'health' \(submit\)"):
            await client.call("health", [], timeout_s=5)
        assert host.served() == {"submit": 1, "health": 1}
        assert host.server is not None
        host.server.close()
    asyncio.run(run())


def test_a_message_too_large_for_a_lane_goes_by_ray(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    monkeypatch.setattr(lanes, "MAX_FRAME_BYTES", 1000)

    async def scenario(server: LaneServer) -> None:
        ray_side = FakeShards("node-a", server.path)
        shards = ActorLanes(ray_side, LANED, node_id=lambda: "node-a")
        assert await shards.call(0, "submit", b"x" * 10, timeout_s=5) == ["submit", [b"x" * 10]]
        assert await shards.call(0, "submit", b"x" * 2000, timeout_s=5) == ["ray", "submit"]
        client = await _client(server)  # a reply too large: the caller hears why
        with pytest.raises(RuntimeError, match="a lane carries at most 1000"):
            await client.call("grow", [b"y" * 900], timeout_s=5)
        assert await shards.call(0, "decide", "c1", timeout_s=5) == ["decide", ["c1"]]
    _serve(tmp_path, scenario)
