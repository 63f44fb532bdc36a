"""The gRPC server: grpc.aio on a uvloop event loop, in front of an ``EngineGateway``."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import grpc
import uvloop

from ...engine.config import GrpcConfig
from ...engine.errors import BackpressureError, EventRejected, ShushError
from . import convert
from . import shush_pb2 as pb
from . import shush_pb2_grpc as pb_grpc
from .gateway import EngineGateway
from .status import status_of

log = logging.getLogger(__name__)
T = TypeVar("T")


class ShushServicer(pb_grpc.ShushServicer):
    def __init__(self, gateway: EngineGateway, config: GrpcConfig) -> None:
        self.gateway = gateway
        self.config = config

    async def _guard(self, context: grpc.aio.ServicerContext,
                     work: Callable[[], Awaitable[T]]) -> T:
        try:
            return await work()
        except ShushError as exc:
            if isinstance(exc, BackpressureError):
                context.set_trailing_metadata((("retry-after-s", f"{exc.retry_after_s:.3f}"),))
            await context.abort(status_of(exc), str(exc))
            raise  # unreachable: abort raises

    async def _submit(self, events: list[pb.Event]) -> pb.SubmitReply:
        if len(events) > self.config.max_events_per_request:
            raise EventRejected(f"a batch holds at most {self.config.max_events_per_request} "
                                f"events, got {len(events)}", field="events")
        if not events:
            return pb.SubmitReply()
        acks = await self.gateway.submit([convert.event_to_wire(e) for e in events])
        return convert.acks_to_reply(events, acks)

    async def SubmitEvents(self, request: pb.EventBatch,
                           context: grpc.aio.ServicerContext) -> pb.SubmitReply:
        return await self._guard(context, lambda: self._submit(list(request.events)))

    async def StreamEvents(self, request_iterator: AsyncIterator[pb.EventBatch],
                           context: grpc.aio.ServicerContext) -> pb.SubmitReply:
        async def work() -> pb.SubmitReply:
            total = pb.SubmitReply()
            async for batch in request_iterator:
                reply = await self._submit(list(batch.events))
                total.acks.extend(reply.acks)
                total.accepted += reply.accepted
                total.duplicates += reply.duplicates
                total.rejected += reply.rejected
                total.retry += reply.retry
            return total

        return await self._guard(context, work)

    async def Decide(self, request: pb.DecideRequest,
                     context: grpc.aio.ServicerContext) -> pb.DecideReply:
        async def work() -> pb.DecideReply:
            if not request.customer_id:
                raise EventRejected("customer_id is missing", field="customer_id")
            verdict, removed = await self.gateway.decide(request.customer_id,
                                                         request.channel or None)
            return convert.verdict_to_reply(verdict, removed)

        return await self._guard(context, work)

    async def Health(self, request: pb.HealthRequest,
                     context: grpc.aio.ServicerContext) -> pb.HealthReply:
        try:
            detail = await self.gateway.health()
        except ShushError as exc:
            return pb.HealthReply(serving=False, detail_json=json.dumps({"error": str(exc)}))
        serving = all(a["alive"] for key in ("routers", "shards", "arbitrators")
                      for a in detail[key])
        return pb.HealthReply(serving=serving, detail_json=self.gateway.to_json(detail))

    async def SetLever(self, request: pb.SetLeverRequest,
                       context: grpc.aio.ServicerContext) -> pb.LeversReply:
        async def work() -> pb.LeversReply:
            return pb.LeversReply(levers=await self.gateway.set_lever(request.action_id,
                                                                      request.lever))

        return await self._guard(context, work)

    async def GetLevers(self, request: pb.LeversRequest,
                        context: grpc.aio.ServicerContext) -> pb.LeversReply:
        async def work() -> pb.LeversReply:
            return pb.LeversReply(levers=await self.gateway.levers())

        return await self._guard(context, work)

    async def Explain(self, request: pb.ExplainRequest,
                      context: grpc.aio.ServicerContext) -> pb.ExplainReply:
        async def work() -> pb.ExplainReply:
            decisions = await self.gateway.explain(request.customer_id)
            return pb.ExplainReply(decisions_json=json.dumps(decisions))

        return await self._guard(context, work)


async def start_server(gateway: EngineGateway, config: GrpcConfig) -> tuple[grpc.aio.Server, int]:
    options = [("grpc.max_receive_message_length", config.max_message_bytes),
               ("grpc.max_send_message_length", config.max_message_bytes)]
    server = grpc.aio.server(options=options)
    pb_grpc.add_ShushServicer_to_server(ShushServicer(gateway, config), server)
    port = server.add_insecure_port(f"{config.host}:{config.port}")
    if port == 0:
        raise OSError(f"cannot bind gRPC on {config.host}:{config.port}")
    await server.start()
    return server, port


class BackgroundServer:
    """The gRPC server on its own uvloop loop in a daemon thread (CLI, tests, benchmarks)."""

    def __init__(self, gateway: EngineGateway, config: GrpcConfig) -> None:
        self.gateway = gateway
        self.config = config
        self.port = 0
        self.grace_s = 1.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="shush-grpc", daemon=True)

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        try:
            server, self.port = await start_server(self.gateway, self.config)
        except BaseException as exc:
            self._error = exc
            raise
        finally:
            self._ready.set()
        await self._stopping.wait()
        await server.stop(self.grace_s)

    def _run(self) -> None:
        loop = uvloop.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
        except BaseException:
            if self._error is None:
                log.exception("gRPC server stopped on an error")
        finally:
            loop.close()

    def start(self) -> int:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self.port

    def stop(self, grace_s: float = 1.0) -> None:
        if self._loop is None or self._stopping is None or not self._thread.is_alive():
            return
        self.grace_s = grace_s
        self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout=grace_s + 10)
