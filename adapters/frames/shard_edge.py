"""Submits and Decides straight to the customer's shard: a frames server in each shard's
process that takes ``SubmitPacked`` and answers ``Decide`` about that shard's customers,
with no router in between.

A client that asked ``Routes`` (the partition table and these servers' addresses) hashes
each customer to its shard and calls it; a call that reaches the wrong shard (stale routes)
gets ``FAILED_PRECONDITION``, and the client asks the routers instead. Through a router a
Decide wakes five processes in turn (client, router, shard, router, client); here three. On
a loaded 2-core machine each wake-up can wait for a CPU, so the tail is in their number
(docs/performance-history.md, stop 27). A submit skips the router's unpacking, checks, split
and re-packing (stop 38): the shard checks the events itself
(``ShardActorBody.take_direct``). Keys, roles, TLS, limits and errors are the edge's
(``ShushServicer`` on ``FramesServer``), from the same ``grpc`` settings.
"""

from __future__ import annotations

import ipaddress
import time
from typing import Any

import ray

from ...actors.ports import ShardFront
from ...engine.arbitration import Verdict
from ...engine.config import EngineConfig
from ...engine.errors import WrongShard
from ..grpc.gateway import REPORTABLE_OUTCOMES, decided
from ..grpc.server import ShushServicer
from .server import FramesServer, server_tls

SHARD_METHODS = frozenset({"Decide", "SubmitPacked"})


class ShardGateway:
    """What ``ShushServicer.Decide`` needs, answered by the shard itself."""

    outcome_kinds = REPORTABLE_OUTCOMES

    def __init__(self, shard: ShardFront) -> None:
        self.shard = shard

    async def submit(self, events: list[list[Any]], arrived_s: float | None = None,
                     packed: bytes | None = None) -> list[list[Any]]:
        """A client's events for this shard's customers, one ack each (``take_direct``)."""
        taken_s = time.time()
        return await self.shard.take_direct(events, packed, arrived_s or taken_s, taken_s)

    async def decide(self, customer_id: str, channel: str | None, present: bool = False
                     ) -> tuple[Verdict, list[Any], str]:
        owner = self.shard.shard_of(customer_id)
        if owner != self.shard.index:
            raise WrongShard(customer_id, owner=owner, shard=self.shard.index)
        return decided(await self.shard.decide(customer_id, channel, present, time.time()))


def advertised_host(host: str) -> str:
    """The address clients reach a server bound to ``host`` at: a wildcard bind is reached at
    this node's address."""
    try:
        if ipaddress.ip_address(host.strip("[]")).is_unspecified:
            return str(ray.util.get_node_ip_address())
    except ValueError:
        pass  # a host name
    return host


class ShardFramesServer:
    """``actors.ports.ShardServer``: a shard's own frames server, on a free port."""

    def __init__(self, config: EngineConfig, shard: ShardFront) -> None:
        self.config = config.grpc
        servicer = ShushServicer(ShardGateway(shard), self.config)  # type: ignore[arg-type]
        self.server = FramesServer(servicer, self.config, only=SHARD_METHODS)

    async def start(self) -> str:
        port = await self.server.start(self.config.host, 0, server_tls(self.config))
        host = advertised_host(self.config.host)
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    async def stop(self, grace_s: float) -> None:
        await self.server.stop(grace_s)

    @property
    def served(self) -> int:
        return self.server.answered
