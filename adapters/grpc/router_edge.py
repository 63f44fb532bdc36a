"""The gRPC server as a router's edge (``actors.ports.EdgeServer``): it runs on the router
actor's event loop and hands events to that router in-process.

Every router serves the same port: grpc binds it with SO_REUSEPORT (its default on Linux), so
the kernel spreads client connections over the routers, and when a router dies its clients
reconnect to the others. Against a gateway in the driver process that called a router, a batch
skips one actor call each way and a second decoding (stop 19's figures in
docs/performance-history.md).
"""

from __future__ import annotations

from ...actors import ray_calls
from ...actors.ports import EdgePorts, RouterFront
from ...actors.supervisor import SUPERVISOR_NAME
from ...engine.config import EngineConfig
from ...engine.errors import EngineUnavailable
from .gateway import EngineGateway
from .server import EdgeServers, start_server


class GrpcEdge:
    def __init__(self, config: EngineConfig, outcome_kinds: frozenset[str],
                 router: RouterFront) -> None:
        self.config = config
        self.outcome_kinds = outcome_kinds
        self.router = router
        self.server: EdgeServers | None = None

    async def start(self, ports: EdgePorts) -> EdgePorts:
        supervisor = ray_calls.get_actor(SUPERVISOR_NAME, self.config.namespace)
        if supervisor is None:
            raise EngineUnavailable("no supervisor in this namespace", what=SUPERVISOR_NAME)
        gateway = EngineGateway(self.config, supervisor, self.router,
                                outcome_kinds=self.outcome_kinds)
        self.server, bound = await start_server(gateway, self.config.grpc.model_copy(
            update={"port": ports.grpc, "frames_port": ports.frames}))
        return EdgePorts(bound, self.server.frames_port)

    async def stop(self, grace_s: float) -> None:
        if self.server is not None:
            await self.server.stop(grace_s)
            self.server = None
