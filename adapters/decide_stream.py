"""Decides multiplexed on one ``DecideStream`` call per gRPC connection (``AsyncShushClient``).

A unary gRPC call costs the router ~0.37-0.46 ms of CPU and ~4.5 context switches whatever
its handler does (call set-up, metadata, a task per call); a message on an open stream costs
~0.17-0.19 ms and ~3 (``grpc.aio`` on this 2-core machine, a canned reply). Under load every
context switch is a chance to wait for a CPU, so an inbound Decide rides a stream.

``DecideStreamer`` is called like a unary stub method (``await decide(request, timeout=...,
metadata=...)``) and raises what a unary Decide would: ``grpc.aio.AioRpcError`` with the status
code, details and trailing metadata (``shush-field``, ``retry-after-s``). The stream opens at
the first Decide; when it breaks (a router stopped, the connection dropped) every Decide in
flight fails ``UNAVAILABLE``, which the client retries, and the next one opens a new stream.
``BlockingDecideStreamer`` does the same for ``ShushClient`` (any number of threads at once):
its Decides raise a ``grpc.RpcError`` with the same ``code()``, ``details()`` and
``trailing_metadata()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import grpc

from .grpc import shush_pb2 as pb
from .grpc import shush_pb2_grpc as pb_grpc
from .grpc.status import STATUS_BY_NUMBER, refusal_metadata


def outcome_status(outcome: pb.DecideOutcome
                   ) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]]:
    """What a unary Decide would have failed with, for a failed ``DecideOutcome``: its status
    code, details and trailing metadata."""
    return (STATUS_BY_NUMBER.get(outcome.code, grpc.StatusCode.UNKNOWN), outcome.details,
            refusal_metadata(outcome.field, outcome.retry_after_s or None))


def outcome_error(outcome: pb.DecideOutcome) -> grpc.aio.AioRpcError:
    """The error a unary Decide would have raised for a failed ``DecideOutcome``."""
    code, details, trailing = outcome_status(outcome)
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailing),
                                details=details)


class DecideStreamer:
    def __init__(self, stub: pb_grpc.ShushStub) -> None:
        self._stub = stub
        self._ids = itertools.count(1)
        self._call: Any = None  # the open grpc.aio stream-stream call
        self._opened: asyncio.Task[Any] | None = None  # the server took the stream (or not)
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[pb.DecideReply]] = {}
        self._writing = asyncio.Lock()  # one write at a time on a grpc.aio stream
        self._write_failed: Any = None  # the call a write failed on

    async def __call__(self, request: pb.DecideRequest, *, timeout: float | None = None,
                       metadata: tuple[tuple[str, str], ...] = ()) -> pb.DecideReply:
        call = await self._open(metadata, timeout)
        call_id = next(self._ids)
        future: asyncio.Future[pb.DecideReply] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = future  # (no await since ``_open`` saw the call live)
        try:
            try:
                async with self._writing:
                    await call.write(pb.DecideCall(id=call_id, request=request))
            except (grpc.RpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
                self._write_failed = call  # the stream broke: its reader fails this Decide
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise _deadline(timeout) from None
        finally:
            self._pending.pop(call_id, None)

    async def _open(self, metadata: tuple[tuple[str, str], ...], timeout: float | None) -> Any:
        """The live stream, opened if need be. A stream the server refuses (a missing key)
        raises its status here: written to, grpc.aio would report the failed write instead."""
        if self._call is None:
            call = self._call = self._stub.DecideStream(metadata=metadata)
            self._opened = asyncio.get_running_loop().create_task(_headers(call))
            self._reader = asyncio.get_running_loop().create_task(self._read(call))
        call, opened = self._call, self._opened
        assert opened is not None
        if not opened.done():  # the stream's first Decides wait for its headers
            try:
                await asyncio.wait_for(asyncio.shield(opened), timeout)
            except TimeoutError:
                raise _deadline(timeout) from None
        if call.done():
            raise grpc.aio.AioRpcError(await call.code(), grpc.aio.Metadata(),
                                       await call.trailing_metadata() or grpc.aio.Metadata(),
                                       details=await call.details())
        return call

    async def _read(self, call: Any) -> None:
        error: grpc.aio.AioRpcError | None = None
        try:
            async for outcome in call:
                future = self._pending.get(outcome.id)
                if future is None or future.done():
                    continue  # its caller gave up (timed out)
                if outcome.code:
                    future.set_exception(outcome_error(outcome))
                else:
                    future.set_result(outcome.reply)
            error = _broken("the server ended the Decide stream")
        except grpc.aio.AioRpcError as exc:
            # the whole stream failed: a malformed message keeps its status; a stream
            # cancelled, dropped or broken under a write (INTERNAL) is UNAVAILABLE, retried
            broken = (exc.code() == grpc.StatusCode.CANCELLED
                      or (exc.code() == grpc.StatusCode.INTERNAL and self._write_failed is call))
            error = _broken(f"the Decide stream broke: {exc.details()}") if broken else exc
        finally:
            if self._call is call:
                self._call = None
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(error or _broken("the Decide stream closed"))

    async def close(self) -> None:
        call, reader, self._call = self._call, self._reader, None
        if call is not None:
            call.cancel()
        if reader is not None:
            await asyncio.gather(reader, return_exceptions=True)


async def _headers(call: Any) -> None:
    """Until the server answers the stream's opening: its headers, or its final status."""
    with contextlib.suppress(grpc.RpcError):
        await call.initial_metadata()


def _deadline(timeout: float | None) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, grpc.aio.Metadata(),
                                grpc.aio.Metadata(), details=f"Decide: no reply in {timeout} s")


def _broken(details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(),
                                grpc.aio.Metadata(), details=details)


class DecideStreamError(grpc.RpcError):
    """A blocking Decide's failure on the stream, with what a unary call's error offers."""

    def __init__(self, code: grpc.StatusCode, details: str,
                 trailing: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(f"{code.name}: {details}")
        self._code, self._details, self._trailing = code, details, trailing

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._trailing

    def initial_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()


_END = None  # what ends a blocking stream's requests (the client half-closes)


class BlockingDecideStreamer:
    """``DecideStreamer`` for the blocking client: a thread reads the stream's answers and
    hands each to the thread that waits for it. Called like a unary stub method."""

    def __init__(self, stub: pb_grpc.ShushStub) -> None:
        self._stub = stub
        self._ids = itertools.count(1)
        self._lock = threading.Lock()  # the stream's opening and the pending Decides
        self._stream: _BlockingStream | None = None

    def __call__(self, request: pb.DecideRequest, *, timeout: float | None = None,
                 metadata: tuple[tuple[str, str], ...] = ()) -> pb.DecideReply:
        stream = self._open(metadata, timeout)
        call_id = next(self._ids)
        future: Future[pb.DecideReply] = Future()
        with self._lock:
            if stream.error is not None:  # it broke since it was opened
                raise stream.error
            stream.pending[call_id] = future
        try:
            stream.requests.put(pb.DecideCall(id=call_id, request=request))
            return future.result(timeout)
        except TimeoutError:
            raise DecideStreamError(grpc.StatusCode.DEADLINE_EXCEEDED,
                                    f"Decide: no reply in {timeout} s") from None
        finally:
            with self._lock:
                stream.pending.pop(call_id, None)

    def _open(self, metadata: tuple[tuple[str, str], ...], timeout: float | None
              ) -> _BlockingStream:
        """The live stream, opened if need be; a stream the server refuses raises its
        status (a missing key: ``UNAUTHENTICATED``)."""
        with self._lock:
            stream = self._stream
            if stream is None or stream.error is not None:
                stream = self._stream = _BlockingStream(self._stub, metadata, self._lock)
        if not stream.opened.wait(timeout):
            raise DecideStreamError(grpc.StatusCode.DEADLINE_EXCEEDED,
                                    f"Decide: the stream did not open in {timeout} s")
        if stream.refused is not None:
            raise stream.refused
        return stream

    def close(self) -> None:
        with self._lock:
            stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()


class _BlockingStream:
    """One ``DecideStream`` call of ``BlockingDecideStreamer``'s and the thread reading it."""

    def __init__(self, stub: pb_grpc.ShushStub, metadata: tuple[tuple[str, str], ...],
                 lock: threading.Lock) -> None:
        self.requests: queue.SimpleQueue[pb.DecideCall | None] = queue.SimpleQueue()
        self.pending: dict[int, Future[pb.DecideReply]] = {}
        self.opened = threading.Event()  # the server answered the opening
        self.refused: grpc.RpcError | None = None  # how, if it refused the stream
        self.error: grpc.RpcError | None = None  # set once the stream is over
        self._lock = lock
        self.call: Any = stub.DecideStream(self._requests(), metadata=metadata)
        self._reader = threading.Thread(target=self._read, name="shush-decide-stream",
                                        daemon=True)
        self._reader.start()

    def _requests(self) -> Iterator[pb.DecideCall]:
        while (call := self.requests.get()) is not _END:
            yield call

    def _read(self) -> None:
        error: grpc.RpcError = _broken_blocking("the Decide stream closed")
        try:
            self.call.initial_metadata()  # the headers, or the refusal's final status
            if self.call.done() and self.call.code() != grpc.StatusCode.OK:
                self.refused = self.call
            self.opened.set()
            for outcome in self.call:
                with self._lock:
                    future = self.pending.get(outcome.id)
                if future is None or future.done():
                    continue  # its caller gave up (timed out)
                if outcome.code:
                    future.set_exception(DecideStreamError(*outcome_status(outcome)))
                else:
                    future.set_result(outcome.reply)
            error = _broken_blocking("the server ended the Decide stream")
        except grpc.RpcError as exc:  # the call failed: a malformed message keeps its status
            if isinstance(exc, grpc.Call) and exc.code() != grpc.StatusCode.CANCELLED:
                error = exc
            else:  # cancelled (a router stopped): UNAVAILABLE, which the client retries
                error = _broken_blocking(f"the Decide stream broke: {exc}")
        finally:
            self.opened.set()
            with self._lock:
                self.error = error
                waiting = list(self.pending.values())
            for future in waiting:
                if not future.done():
                    future.set_exception(error)

    def close(self) -> None:
        self.requests.put(_END)
        self.call.cancel()
        self._reader.join(timeout=5)


def _broken_blocking(details: str) -> DecideStreamError:
    return DecideStreamError(grpc.StatusCode.UNAVAILABLE, details)
