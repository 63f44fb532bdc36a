"""A gRPC server in a thread in front of a fake gateway (no Ray), and test certificates."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvloop

from shush.adapters.grpc.gateway import REPORTABLE_OUTCOMES
from shush.adapters.grpc.server import start_server
from shush.engine import codec
from shush.engine.arbitration import Verdict
from shush.engine.config import GrpcConfig
from shush.engine.errors import EngineUnavailable
from shush.engine.partitions import PartitionTable

log = logging.getLogger(__name__)


@dataclass
class FakeGateway:
    """Records what reached the engine; answers like a healthy one."""

    calls: list[tuple[str, Any]] = field(default_factory=list)
    lever_values: dict[str, float] = field(default_factory=dict)
    outcome_kinds: frozenset[str] = REPORTABLE_OUTCOMES
    record_outcomes_missing: bool = False  # the router side not there yet
    table: PartitionTable = field(default_factory=lambda: PartitionTable([0]))
    shard_addresses: dict[int, str] = field(default_factory=dict)  # Routes' shard servers

    async def submit(self, events: list[list[Any]], arrived_s: float | None = None,
                     packed: bytes | None = None) -> list[list[Any]]:
        self.calls.append(("submit", events))
        return [[codec.ACCEPTED, ""] for _ in events]

    async def record_outcomes(self, outcomes: list[list[Any]]) -> list[list[Any]]:
        self.calls.append(("record_outcomes", outcomes))
        if self.record_outcomes_missing:
            raise EngineUnavailable("no record_outcomes", what="router")
        return [[codec.ACCEPTED, ""] for _ in outcomes]

    async def decide(self, customer_id: str, channel: str | None, present: bool = False
                     ) -> tuple[Verdict, list[Any], str]:
        self.calls.append(("decide", customer_id))
        return Verdict(customer_id, (), None), [], ""

    async def routes(self) -> tuple[PartitionTable, dict[int, str]]:
        self.calls.append(("routes", None))
        return self.table, dict(self.shard_addresses)

    async def explain(self, customer_id: str) -> list[dict[str, Any]]:
        self.calls.append(("explain", customer_id))
        return []

    async def set_lever(self, action_id: str, lever: float) -> dict[str, float]:
        self.calls.append(("set_lever", (action_id, lever)))
        self.lever_values[action_id] = lever
        return dict(self.lever_values)

    async def levers(self) -> dict[str, float]:
        return dict(self.lever_values)

    async def checkpoint(self) -> list[int]:
        self.calls.append(("checkpoint", None))
        return [3, 4]  # customers saved by each of two shards

    async def health(self) -> dict[str, Any]:
        return {"routers": [{"alive": True}], "shards": [{"alive": True}],
                "arbitrators": [{"alive": True}]}

    @staticmethod
    def to_json(data: Any) -> str:
        import json

        return json.dumps(data)


class BackgroundServer:
    """The gRPC server on its own uvloop loop in a daemon thread (in production it runs
    on a router actor's loop)."""

    def __init__(self, gateway: Any, config: GrpcConfig) -> None:
        self.gateway = gateway
        self.config = config
        self.port = 0
        self.frames_port: int | None = None  # when config.frames_port is set
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
            self.frames_port = server.frames_port
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


@contextmanager
def serving(config: GrpcConfig, gateway: FakeGateway | None = None
            ) -> Iterator[tuple[str, FakeGateway]]:
    """Serve ``config`` (port forced to 0) in a thread; yield its target and gateway."""
    with serving_both(config, gateway) as (target, _, gateway):
        yield target, gateway


@contextmanager
def serving_both(config: GrpcConfig, gateway: FakeGateway | None = None
                 ) -> Iterator[tuple[str, str, FakeGateway]]:
    """``serving``, with the frames edge beside gRPC (its port forced to 0 too when set);
    yield both targets (frames: empty when off) and the gateway."""
    gateway = gateway or FakeGateway()
    update: dict[str, Any] = {"port": 0}
    if config.frames_port is not None:
        update["frames_port"] = 0
    server = BackgroundServer(gateway, config.model_copy(update=update))
    port = server.start()
    try:
        frames = f"127.0.0.1:{server.frames_port}" if server.frames_port else ""
        yield f"127.0.0.1:{port}", frames, gateway
    finally:
        server.stop(grace_s=0.1)


@dataclass(frozen=True)
class Certificates:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA nobody's certificate chains to


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(directory: Path) -> Certificates:
    """A private CA, a server certificate for localhost/127.0.0.1 and a client certificate."""
    d = directory
    for ca in ("ca", "other_ca"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key",
                 "-out", f"{ca}.pem", "-days", "2", "-subj", f"/CN=Shush test {ca}", cwd=d)
    (d / "server.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for who in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{who}.key", "-out",
                 f"{who}.csr", "-subj", f"/CN={'localhost' if who == 'server' else 'crm'}",
                 cwd=d)
        _openssl("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{who}.pem", "-days", "2", "-extfile",
                 f"{who}.ext", cwd=d)
    return Certificates(d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem",
                        d / "client.key", d / "other_ca.pem")
