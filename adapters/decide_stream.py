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
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any

import grpc

from .grpc import shush_pb2 as pb
from .grpc import shush_pb2_grpc as pb_grpc
from .grpc.status import STATUS_BY_NUMBER, refusal_metadata


def outcome_error(outcome: pb.DecideOutcome) -> grpc.aio.AioRpcError:
    """The error a unary Decide would have raised for a failed ``DecideOutcome``."""
    trailing = refusal_metadata(outcome.field, outcome.retry_after_s or None)
    return grpc.aio.AioRpcError(STATUS_BY_NUMBER.get(outcome.code, grpc.StatusCode.UNKNOWN),
                                grpc.aio.Metadata(), grpc.aio.Metadata(*trailing),
                                details=outcome.details)


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
