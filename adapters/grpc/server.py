"""The gRPC server: grpc.aio on a router's event loop, in front of an ``EngineGateway``.

Edges are guarded in this order: grpc refuses messages above ``max_message_bytes``; the
``AuthInterceptor`` checks the API key and role (when keys are configured) and parses the
request (malformed bytes: ``INVALID_ARGUMENT``); ``limits`` refuses a request that breaks a
size limit as a whole; only then does anything reach the engine. TLS (and mutual TLS) comes
from ``GrpcConfig.security``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import grpc

from ...engine import codec
from ...engine.config import GrpcConfig
from ...engine.errors import CodecError, ConfigError, EventRejected, ShushError
from ..frames.server import FramesServer, server_tls
from . import convert, limits
from . import shush_pb2 as pb
from . import shush_pb2_grpc as pb_grpc
from .auth import AuthInterceptor, KeyRing
from .gateway import EngineGateway
from .status import refusal_metadata, refusal_of, status_of

log = logging.getLogger(__name__)
T = TypeVar("T")
# Decides a DecideStream has in flight at most: a client past it waits for answers
DECIDE_STREAM_WINDOW = 256


class ShushServicer(pb_grpc.ShushServicer):
    def __init__(self, gateway: EngineGateway, config: GrpcConfig) -> None:
        self.gateway = gateway
        self.config = config

    async def _guard(self, context: grpc.aio.ServicerContext,
                     work: Callable[[], Awaitable[T]]) -> T:
        try:
            return await work()
        except ShushError as exc:
            metadata = refusal_metadata(*refusal_of(exc))
            if metadata:
                context.set_trailing_metadata(metadata)
            await context.abort(status_of(exc), str(exc))
            raise  # unreachable: abort raises

    async def _submit(self, events: list[pb.Event]) -> pb.SubmitReply:
        limits.check_events(events, self.config)  # the whole request, before anything is taken
        if not events:
            return pb.SubmitReply()
        acks = await self.gateway.submit([convert.event_to_wire(e) for e in events])
        return convert.acks_to_reply((e.event_id for e in events), acks)

    async def SubmitPacked(self, request: pb.PackedEvents,
                           context: grpc.aio.ServicerContext) -> pb.SubmitReply:
        arrived_s = time.time()

        async def work() -> pb.SubmitReply:
            try:
                events, packed = codec.unpack_events(request.events)
            except CodecError as exc:
                raise limits.RequestRejected(str(exc), field="events") from exc
            limits.check_wire_events(events, self.config)
            if not events:
                return pb.SubmitReply()
            acks = await self.gateway.submit(events, arrived_s, packed)
            return convert.acks_to_reply(map(convert.wire_event_id, events), acks)

        return await self._guard(context, work)

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

    async def _decide(self, request: pb.DecideRequest) -> pb.DecideReply:
        if not request.customer_id:
            raise EventRejected("customer_id is missing", field="customer_id")
        verdict, removed, treatment_id = await self.gateway.decide(
            request.customer_id, request.channel or None, request.present)
        return convert.verdict_to_reply(verdict, removed, treatment_id)

    async def Decide(self, request: pb.DecideRequest,
                     context: grpc.aio.ServicerContext) -> pb.DecideReply:
        return await self._guard(context, lambda: self._decide(request))

    async def _decide_outcome(self, call: pb.DecideCall) -> pb.DecideOutcome:
        """A ``DecideStream`` call's answer: the reply, or what a unary Decide would raise."""
        try:
            return pb.DecideOutcome(id=call.id, reply=await self._decide(call.request))
        except ShushError as exc:
            field, retry_after_s = refusal_of(exc)
            return pb.DecideOutcome(id=call.id, code=status_of(exc).value[0], details=str(exc),
                                    field=field, retry_after_s=retry_after_s or 0.0)
        except Exception as exc:  # the caller hears of it, and the stream goes on
            log.exception("DecideStream: a Decide failed")
            return pb.DecideOutcome(id=call.id, code=grpc.StatusCode.INTERNAL.value[0],
                                    details=f"Decide failed: {exc}")

    async def DecideStream(self, calls: AsyncIterator[pb.DecideCall],
                           context: grpc.aio.ServicerContext) -> None:
        """Decides on one stream, each answered as it is ready (``DecideCall.id`` pairs them
        up) and written by its own task, with no queue in between; at most
        ``DECIDE_STREAM_WINDOW`` at a time: past that the stream is not read, and HTTP/2's
        flow control holds the client back. Over a stream a Decide costs the router about
        half the CPU of a unary call (no call set-up)."""
        window = asyncio.Semaphore(DECIDE_STREAM_WINDOW)
        writing = asyncio.Lock()  # one write at a time on a grpc.aio stream
        deciding: set[asyncio.Task[None]] = set()

        async def answer(call: pb.DecideCall) -> None:
            try:
                outcome = await self._decide_outcome(call)
                async with writing:
                    await context.write(outcome)
            except Exception as exc:  # the stream ended: the client fails what it waits for
                log.debug("DecideStream: an answer found the stream closed: %s", exc)
            finally:
                window.release()

        # headers at once: a client waits for them to know the stream was taken (a refused
        # one ends with its status instead)
        await context.send_initial_metadata(())
        try:
            async for call in calls:  # a malformed message ends the stream with its error
                await window.acquire()
                task = asyncio.get_running_loop().create_task(answer(call))
                deciding.add(task)
                task.add_done_callback(deciding.discard)
            while deciding:  # the client is done writing: answer what it asked
                await asyncio.wait(set(deciding))
        finally:
            for task in deciding:
                task.cancel()

    async def Routes(self, request: pb.RoutesRequest,
                     context: grpc.aio.ServicerContext) -> pb.RoutesReply:
        async def work() -> pb.RoutesReply:
            table, addresses = await self.gateway.routes()
            return pb.RoutesReply(owners=table.owners, version=table.version, decide=[
                pb.ShardEndpoint(shard=shard, address=address)
                for shard, address in sorted(addresses.items())])

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

    async def RecordOutcome(self, request: pb.OutcomeBatch,
                            context: grpc.aio.ServicerContext) -> pb.OutcomeReply:
        async def work() -> pb.OutcomeReply:
            outcomes = list(request.outcomes)
            wire = limits.outcomes_to_wire(outcomes, self.config, self.gateway.outcome_kinds)
            if not wire:
                return pb.OutcomeReply()
            acks = await self.gateway.record_outcomes(wire)
            return convert.acks_to_outcome_reply(acks, outcomes)

        return await self._guard(context, work)

    async def SetLever(self, request: pb.SetLeverRequest,
                       context: grpc.aio.ServicerContext) -> pb.LeversReply:
        async def work() -> pb.LeversReply:
            return pb.LeversReply(levers=await self.gateway.set_lever(request.action_id,
                                                                      request.lever))

        return await self._guard(context, work)

    async def Checkpoint(self, request: pb.CheckpointRequest,
                         context: grpc.aio.ServicerContext) -> pb.CheckpointReply:
        async def work() -> pb.CheckpointReply:
            saved = await self.gateway.checkpoint()
            return pb.CheckpointReply(saved=sum(saved), shards=len(saved))

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

    async def StartRun(self, request: pb.StartRunRequest,
                       context: grpc.aio.ServicerContext) -> pb.RunProgress:
        async def work() -> pb.RunProgress:
            run = convert.run_from_request(request, self.gateway.config.runs.default_rate_per_s)
            return convert.progress_to_proto(await self.gateway.start_run(run))

        return await self._guard(context, work)

    async def ListRuns(self, request: pb.RunsRequest,
                       context: grpc.aio.ServicerContext) -> pb.RunsReply:
        async def work() -> pb.RunsReply:
            return pb.RunsReply(runs=[convert.progress_to_proto(p)
                                      for p in await self.gateway.runs()])

        return await self._guard(context, work)

    async def Report(self, request: pb.ReportRequest,
                     context: grpc.aio.ServicerContext) -> pb.ReportReply:
        async def work() -> pb.ReportReply:
            return pb.ReportReply(report_json=json.dumps(await self.gateway.report()))

        return await self._guard(context, work)


def is_loopback(host: str) -> bool:
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name, 0.0.0.0 or :: reach beyond this machine


def exposure_warnings(config: GrpcConfig) -> list[str]:
    """What is unsafe about serving ``config`` (empty when nothing is)."""
    if is_loopback(config.host):
        return []
    warnings = []
    if not config.security.auth_enabled:
        warnings.append(f"gRPC binds {config.host}, beyond loopback, with NO API KEYS: anyone "
                        f"who reaches the port can submit events and set levers. Configure "
                        f"grpc.security.api_keys.")
    if not config.security.tls_enabled:
        warnings.append(f"gRPC binds {config.host} without TLS: events and API keys cross the "
                        f"network in clear text. Configure grpc.security.tls_cert_path and "
                        f"tls_key_path.")
    return warnings


def server_credentials(config: GrpcConfig) -> grpc.ServerCredentials | None:
    """TLS credentials from the configured PEM files (mutual TLS with a client CA)."""
    security = config.security
    if security.tls_cert_path is None or security.tls_key_path is None:
        return None
    try:
        chain = security.tls_cert_path.read_bytes()
        key = security.tls_key_path.read_bytes()
        client_ca = (security.tls_client_ca_path.read_bytes()
                     if security.tls_client_ca_path is not None else None)
    except OSError as exc:
        raise ConfigError(f"cannot read a TLS file: {exc}", field="grpc.security") from exc
    return grpc.ssl_server_credentials([(key, chain)], root_certificates=client_ca,
                                       require_client_auth=client_ca is not None)


class EdgeServers:
    """The gRPC server and, when ``frames_port`` is set, the frames server beside it, both
    answered by one ``ShushServicer``."""

    def __init__(self, grpc_server: grpc.aio.Server, frames: FramesServer | None,
                 frames_port: int | None) -> None:
        self.grpc = grpc_server
        self.frames = frames
        self.frames_port = frames_port

    async def stop(self, grace_s: float) -> None:
        if self.frames is not None:
            await self.frames.stop(grace_s)
        await self.grpc.stop(grace_s)


async def start_server(gateway: EngineGateway, config: GrpcConfig) -> tuple[EdgeServers, int]:
    """Serve ``config``: gRPC on ``port``, and frames on ``frames_port`` if set; return the
    servers and the gRPC port bound."""
    options = [("grpc.max_receive_message_length", config.max_message_bytes),
               ("grpc.max_send_message_length", config.max_message_bytes)]
    for warning in exposure_warnings(config):
        log.warning("%s", warning)
    server = grpc.aio.server(options=options,
                             interceptors=[AuthInterceptor(KeyRing(config.security.api_keys))])
    servicer = ShushServicer(gateway, config)
    pb_grpc.add_ShushServicer_to_server(servicer, server)
    address = f"{config.host}:{config.port}"
    credentials = server_credentials(config)
    port = (server.add_secure_port(address, credentials) if credentials is not None
            else server.add_insecure_port(address))
    if port == 0:
        raise OSError(f"cannot bind gRPC on {address}")
    frames, frames_port = None, None
    if config.frames_port is not None:
        frames = FramesServer(servicer, config)
        frames_port = await frames.start(config.host, config.frames_port, server_tls(config))
    await server.start()
    return EdgeServers(server, frames, frames_port), port
