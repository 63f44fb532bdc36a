"""A running engine seen from the driver: supervisor and routers.

``Engine.start(config)`` loads the catalog (failing fast on an invalid one), creates the
supervisor, which creates every other actor; ``serve_grpc`` has every router serve gRPC.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Any

from ..actors import ray_calls
from ..actors.supervisor import SUPERVISOR_NAME, SupervisorActor
from ..adapters.channels.jsonl import JsonlChannel
from ..adapters.frames.shard_edge import ShardFramesServer
from ..adapters.grpc.router_edge import GrpcEdge
from ..adapters.stores import make_store
from ..adapters.stores.dead_letters import open_dead_letters
from ..engine.catalog import Catalog
from ..engine.config import EngineConfig
from ..engine.outcomes import IGNORED
from ..engine.store import claim_partition_count
from ..policies.policy_config import catalog_policies
from .config_loader import load_engine_catalog


class Engine:
    def __init__(self, config: EngineConfig, catalog: Catalog, supervisor: Any,
                 routers: list[Any]) -> None:
        self.config = config
        self.catalog = catalog
        self.supervisor = supervisor
        self.routers = routers
        self.port: int | None = None  # the gRPC port every router serves
        self.frames_port: int | None = None  # the frames edge's (``grpc.frames_port`` set)

    @classmethod
    def start(cls, config: EngineConfig, *, detached: bool = False) -> Engine:
        config = _tls_paths_resolved(config)
        catalog = load_engine_catalog(config)
        config.data_dir.mkdir(parents=True, exist_ok=True)
        url = config.resolved_store_url
        with contextlib.closing(make_store(url)) as store:  # fail fast: bad URL, no database,
            claim_partition_count(store, config.num_partitions)  # or another partition count
        channel_factory = functools.partial(JsonlChannel, Path(config.channel.path).resolve())
        dead_letter_factory = functools.partial(open_dead_letters, url)
        store_factory = functools.partial(make_store, url)
        outcome_kinds = frozenset(catalog_policies(catalog).outcomes.known() - {IGNORED})
        edge_factory = functools.partial(GrpcEdge, config, outcome_kinds)
        # with the frames edge on, each shard also takes submits and Decides about its own
        # customers
        shard_server_factory = (functools.partial(ShardFramesServer, config)
                                if config.grpc.frames_port is not None else None)
        supervisor = ray_calls.create(
            SupervisorActor, config.model_dump_json(), catalog.to_wire(), channel_factory,
            dead_letter_factory, store_factory, edge_factory, shard_server_factory,
            name=SUPERVISOR_NAME,
            namespace=config.namespace, num_cpus=0, max_restarts=-1, detached=detached)
        ray_calls.call_blocking(supervisor, "start", timeout_s=config.call_timeout_s * 4)
        routers = ray_calls.call_blocking(supervisor, "get_routers",
                                          timeout_s=config.call_timeout_s)
        return cls(config, catalog, supervisor, routers)

    def serve_grpc(self) -> int:
        """Every router serves gRPC on ``grpc.port`` (0: a free one), and the frames edge on
        ``grpc.frames_port`` when set; return the gRPC port."""
        ports = ray_calls.call_blocking(self.supervisor, "serve_grpc",
                                        timeout_s=self.config.call_timeout_s * 2)
        self.port, self.frames_port = ports.grpc, ports.frames
        return self.port

    @property
    def target(self) -> str:
        assert self.port is not None, "serve_grpc() first"
        return f"{self.config.grpc.host}:{self.port}"

    @property
    def frames_target(self) -> str | None:
        """host:port of the frames edge, served beside gRPC when ``grpc.frames_port`` is set."""
        port = self.frames_port
        return None if port is None else f"{self.config.grpc.host}:{port}"

    def stop(self) -> None:
        """Stop serving, snapshot every shard, stop every actor."""
        self.port = self.frames_port = None
        try:
            ray_calls.call_blocking(self.supervisor, "shutdown",
                                    timeout_s=self.config.call_timeout_s)
        finally:
            ray_calls.kill(self.supervisor)


def _tls_paths_resolved(config: EngineConfig) -> EngineConfig:
    """The TLS files as absolute paths: the routers and shards that read them are Ray
    workers, whose working directory is not the caller's."""
    security = config.grpc.security
    resolved = {name: path.resolve() for name in ("tls_cert_path", "tls_key_path",
                                                  "tls_client_ca_path")
                if (path := getattr(security, name)) is not None}
    if not resolved:
        return config
    grpc = config.grpc.model_copy(update={"security": security.model_copy(update=resolved)})
    return config.model_copy(update={"grpc": grpc})
