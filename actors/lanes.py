"""Lanes: the engine's busiest actor calls over a local Unix socket instead of Ray.

A Ray actor call costs its caller ~0.7 ms of CPU (argument checks, tracing hooks, pickling,
the core worker's bookkeeping: 685-743 µs measured at stop 21 for a 100 KB batch); the same
round trip between two processes over a Unix socket costs 47-76 µs. A router's batches and
outcomes, the gateway's inbound Decides and a shard's calls to its arbitrator are most of the
engine's calls, so they take a lane when caller and callee run on the same node; every other
call (health, flush, levers...), and every call across nodes, stays on Ray.

An actor serves its lane (``LaneHost``) on a socket in a directory only its user can enter
(mode 0700), and tells callers where through Ray (its ``lane`` method) together with its node
id. Ray stays the source of truth for where an actor lives: a caller whose lane breaks (the
actor died, or restarted in another process) fails the calls in flight at once, and asks Ray
again (``ActorLanes``).

Frames are a 4-byte little-endian length, then msgpack: a request ``[id, method, args]``, a
reply ``[id, ok, result]``. Replies come back in any order: each request runs as its own task
in the actor's loop, as a Ray call would, so a Decide does not wait behind a batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import pickle
import stat
import struct
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any, cast

import msgpack

from ..engine.errors import EngineUnavailable, ShushError
from ..engine.packing import packb
from . import ray_calls

log = logging.getLogger(__name__)

# what takes a lane when one is at hand: the calls made per batch, per Decide, per outcome
# batch and per decision turn; control calls (health, flush, levers...) stay on Ray
SHARD_LANE_METHODS = frozenset({"submit", "decide", "record_outcomes"})
ARBITRATOR_LANE_METHODS = frozenset({"arbitrate", "learn", "settle_budgets", "replica"})
MAX_FRAME_BYTES = 64 * 1024 * 1024  # a larger length prefix is a broken peer, not a batch
_HEADER = struct.Struct("<I")
# a failed call's result: its ShushError pickled (it reaches the caller as itself, as over
# Ray), or the text of any other error
_SHUSH_ERROR, _OTHER_ERROR = 0, 1

Handler = Callable[[str, list[Any]], Awaitable[Any]]


class FrameTooLarge(ValueError):
    """A message larger than a lane carries: it goes by Ray instead."""


def _send(transport: asyncio.Transport, message: list[Any]) -> None:
    body = packb(message)
    if len(body) > MAX_FRAME_BYTES:
        raise FrameTooLarge(f"a message of {len(body)} bytes (a lane carries at most "
                            f"{MAX_FRAME_BYTES})")
    transport.writelines((_HEADER.pack(len(body)), body))  # no copy of a batch to prefix it


class _Frames:
    """Bytes in, whole messages out."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        """The messages ``data`` completes; ``ValueError`` on a frame that cannot be one."""
        buffer = self._buffer
        buffer += data
        messages = []
        start = 0
        while len(buffer) - start >= _HEADER.size:
            (size,) = _HEADER.unpack_from(buffer, start)
            if size > MAX_FRAME_BYTES:
                raise ValueError(f"frame of {size} bytes (at most {MAX_FRAME_BYTES})")
            end = start + _HEADER.size + size
            if len(buffer) < end:
                break
            message = msgpack.unpackb(buffer[start + _HEADER.size:end], raw=False)
            if not isinstance(message, list) or len(message) != 3:
                raise ValueError("a frame is a list of three: [id, method or ok, args or result]")
            messages.append(message)
            start = end
        del buffer[:start]
        return messages


class _ServerConnection(asyncio.Protocol):
    def __init__(self, server: LaneServer) -> None:
        self.server = server
        self.frames = _Frames()
        self.transport: asyncio.Transport | None = None
        self.answering: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        try:
            requests = self.frames.feed(data)
        except Exception as exc:  # one broken caller loses its connection, nobody else
            log.warning("%s: closing a connection that sent a bad frame: %s",
                        self.server.what, exc)
            assert self.transport is not None
            self.transport.close()
            return
        loop = asyncio.get_running_loop()
        for request_id, method, args in requests:
            task = loop.create_task(self._answer(request_id, method, args))
            self.answering.add(task)  # held: the loop keeps only weak references to tasks
            task.add_done_callback(self.answering.discard)

    async def _answer(self, request_id: Any, method: Any, args: Any) -> None:
        try:
            if not isinstance(method, str) or not isinstance(args, list):
                raise ValueError("a request is [id, method name, [arguments]]")
            reply = [request_id, True, await self.server.handler(method, args)]
        except ShushError as exc:
            reply = [request_id, False, [_SHUSH_ERROR, pickle.dumps(exc)]]
        except Exception as exc:  # the caller hears of it, as a Ray call's caller would
            reply = [request_id, False, [_OTHER_ERROR, f"{type(exc).__name__}: {exc}"]]
        self.server.served[method] = self.server.served.get(method, 0) + 1
        if self.transport is not None and not self.transport.is_closing():
            try:
                _send(self.transport, reply)
            except FrameTooLarge as exc:
                _send(self.transport, [request_id, False, [_OTHER_ERROR, str(exc)]])


class LaneServer:
    """Serves ``handler(method, args)`` on a Unix socket of its own."""

    def __init__(self, handler: Handler, *, what: str, directory: str | None = None) -> None:
        self.handler = handler
        self.what = what
        self.directory = directory or lane_directory()
        self.connections: set[_ServerConnection] = set()
        self.served: dict[str, int] = {}  # calls answered, by method
        self.path = ""
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> str:
        """Listen; return the socket's path. A socket is named after its process, and the
        sockets of processes that are gone (a killed actor cannot remove its own) go first."""
        _remove_orphans(self.directory)
        self.path = os.path.join(self.directory, f"{self.what}.{os.getpid()}.sock")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self._server = await asyncio.get_running_loop().create_unix_server(
            lambda: _ServerConnection(self), self.path)
        return self.path

    def close(self) -> None:
        """Stop listening, drop every connection (their callers fail over to Ray's answer),
        remove the socket."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.close()
        if self.path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


def lane_directory() -> str:
    """This user's directory of lane sockets: only its owner may enter it, so only the
    engine's own processes can reach an actor this way (a lane skips the edge's auth)."""
    path = os.path.join(tempfile.gettempdir(), f"shush-lanes-{os.getuid()}")
    os.makedirs(path, mode=0o700, exist_ok=True)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise PermissionError(f"{path} must be a directory of this user's, mode 0700 "
                              f"(found mode {stat.S_IMODE(info.st_mode):o}, uid {info.st_uid})")
    return path


def _remove_orphans(directory: str) -> None:
    for name in os.listdir(directory):
        pid = name.rsplit(".", 2)[-2] if name.endswith(".sock") else ""
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(directory, name))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's: alive
        return True
    return True


class LaneClient(asyncio.Protocol):
    """A caller's end of one actor's lane: calls in flight by id, each with its deadline."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.closed = False
        self._ids = itertools.count()
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._frames = _Frames()
        self._transport: asyncio.Transport | None = None

    @classmethod
    async def connect(cls, path: str, *, what: str, timeout_s: float) -> LaneClient:
        client = cls(what)
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.get_running_loop().create_unix_connection(lambda: client, path)
        except (OSError, TimeoutError) as exc:
            raise EngineUnavailable(f"lane unreachable ({exc})", what=what) from exc
        return client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        """The actor's process ended or closed the lane: every call in flight fails now, so
        its caller can re-send (to the actor Ray restarts) instead of waiting out a timeout."""
        self.closed = True
        for future in self._pending.values():
            if not future.done():
                future.set_exception(EngineUnavailable("lane lost", what=self.what))
        self._pending.clear()

    def data_received(self, data: bytes) -> None:
        try:
            replies = self._frames.feed(data)
        except Exception as exc:
            log.warning("%s: closing a lane that sent a bad frame: %s", self.what, exc)
            self.close()
            return
        for request_id, ok, result in replies:
            future = self._pending.pop(request_id, None)
            if future is None or future.done():
                continue  # its caller gave up waiting
            if ok:
                future.set_result(result)
            else:
                future.set_exception(self._error(result))

    def _error(self, result: Any) -> BaseException:
        kind, detail = result
        if kind == _SHUSH_ERROR:
            try:
                error: BaseException = pickle.loads(detail)
                return error
            except Exception:
                detail = "an error that does not unpickle"
        return RuntimeError(f"{self.what} failed: {detail}")

    async def call(self, method: str, args: list[Any], *, timeout_s: float) -> Any:
        if self.closed or self._transport is None:
            raise EngineUnavailable("lane closed", what=self.what)
        request_id = next(self._ids)
        _send(self._transport, [request_id, method, args])
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            async with asyncio.timeout(timeout_s):
                return await future
        except TimeoutError as exc:
            raise EngineUnavailable(f"no answer within {timeout_s}s",
                                    what=f"{self.what}.{method}") from exc
        finally:
            self._pending.pop(request_id, None)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()  # connection_lost fails what is in flight
        self.closed = True


class LaneHost:
    """An actor's end: serves ``methods`` of ``actor`` on a lane opened on the first ask."""

    def __init__(self, actor: object, methods: frozenset[str], *, what: str,
                 directory: str | None = None,
                 node_id: Callable[[], str] = ray_calls.node_id) -> None:
        self.actor = actor
        self.methods = methods
        self.what = what
        self.directory = directory
        self._node_id = node_id
        self.server: LaneServer | None = None
        self._opening = asyncio.Lock()

    async def where(self) -> list[str]:
        """``[node id, socket path]``: what the actor's ``lane`` method answers over Ray."""
        async with self._opening:
            if self.server is None:
                server = LaneServer(self._call, what=self.what, directory=self.directory)
                await server.start()
                self.server = server
        return [self._node_id(), self.server.path]

    async def _call(self, method: str, args: list[Any]) -> Any:
        if method not in self.methods:
            raise ValueError(f"no such lane method {method!r} ({', '.join(sorted(self.methods))})")
        return await getattr(self.actor, method)(*args)

    def served(self) -> dict[str, int]:
        return dict(self.server.served) if self.server is not None else {}


class ActorLanes:
    """Calls to the actors of a kind: ``methods`` over an actor's lane when it runs on this
    node, the rest (and every call to an actor elsewhere) over Ray through ``directory``."""

    def __init__(self, directory: ray_calls.ActorDirectory, methods: frozenset[str],
                 node_id: Callable[[], str] = ray_calls.node_id) -> None:
        self.directory = directory
        self.methods = methods
        self._node_id = node_id
        # per actor: its open lane, or None when it is on another node (Ray carries its calls)
        self._lanes: dict[int, LaneClient | None] = {}
        self._finding = [asyncio.Lock() for _ in directory.names]  # one lookup at a time

    async def call(self, index: int, method: str, *args: Any, timeout_s: float) -> Any:
        """Call the ``index``-th actor; when it is gone, find it afresh next time."""
        try:
            lane = await self._lane(index, timeout_s) if method in self.methods else None
            if lane is not None:
                with contextlib.suppress(FrameTooLarge):
                    return await lane.call(method, list(args), timeout_s=timeout_s)
            return await self.directory.call(index, method, *args, timeout_s=timeout_s)
        except EngineUnavailable:
            lane = self._lanes.get(index)
            if lane is None or lane.closed:  # a lane open to a slow actor stays open
                self.forget(index)
            raise

    async def _lane(self, index: int, timeout_s: float) -> LaneClient | None:
        async with self._finding[index]:  # one lookup and connection, however many callers
            if index in self._lanes:
                lane = self._lanes[index]
                if lane is None or not lane.closed:
                    return lane
            node, path = await self.directory.call(index, "lane", timeout_s=timeout_s)
            if node != self._node_id():
                self._lanes[index] = None
                return None
            lane = await LaneClient.connect(path, what=self.directory.names[index],
                                            timeout_s=timeout_s)
            self._lanes[index] = lane
            return lane

    def forget(self, index: int) -> None:
        lane = self._lanes.pop(index, None)
        if lane is not None:
            lane.close()
        self.directory.forget(index)
