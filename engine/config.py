"""The one root configuration, ``EngineConfig``: frozen, strict, documented field by field.

It is a plain pydantic model here (pure); ``cluster.config_loader`` reads it from YAML and
environment overrides, once, and passes it down to every actor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .partitions import PartitionTable
from .runs import RunsConfig
from .schedule import ScheduledRun
from .sweep import SweepConfig

PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RouterConfig(_Frozen):
    max_batch_events: PositiveInt = Field(2000, description="Events per shard batch before flush")
    flush_interval_ms: NonNegativeFloat = Field(
        0.0, description="Longest wait before a partial flush; 0: at once while the shard's "
        "window has room (under load, batches still grow while the window is full)")
    max_inflight_batches: PositiveInt = Field(
        4, description="Unacknowledged batches per shard handle (backpressure window)"
    )
    max_buffered_events: PositiveInt = Field(
        200_000, description="Events held by one router (queued + in flight) before it refuses"
    )
    resend_backoff_s: PositiveFloat = Field(0.2, description="Wait before re-sending to a shard")
    num_cpus: Annotated[float, Field(ge=0)] = Field(0.25, description="Ray CPU reservation")


class ShardConfig(_Frozen):
    dedup_ids_per_customer: PositiveInt = Field(
        64, description="Recent event ids kept per customer to drop duplicates"
    )
    decisions_per_customer: PositiveInt = Field(
        5, description="Recent decisions Explain returns (from the decision audit)"
    )
    num_cpus: Annotated[float, Field(ge=0)] = Field(0.25, description="Ray CPU reservation")
    max_restarts: int = Field(-1, description="Ray restarts of a crashed shard (-1: forever)")
    full_collection_interval_s: NonNegativeFloat = Field(
        3600.0, description="How often a shard's frozen heap is collected whole, freeing any "
        "reference cycle (actors.heap.SurvivorFreezer): one pause that grows with the resident "
        "customers (60-80 ms at 20,000); 0: never, once health's gc_cycles_found stays 0"
    )
    max_send_attempts: PositiveInt = Field(
        8, description="Channel sends tried (with backoff) before the dead-letter record"
    )
    max_resident_customers: PositiveInt = Field(
        200_000, description="Customers kept in memory; the least recently active leave first"
    )
    passivate_after_s: PositiveFloat = Field(
        3600.0, description="A customer idle this long leaves memory (back on its next turn)"
    )
    timer_tick_s: PositiveFloat = Field(
        0.25, description="How often due timers are fired (absence windows, follow-ups)"
    )
    snapshot_interval_s: PositiveFloat = Field(
        60.0, description="Longest time between two snapshots of a changed customer (the "
        "journal keeps its events between). A customer changed several times in an interval "
        "is saved once, so a longer one costs less when customers repeat")
    max_replay_events: PositiveInt = Field(
        200_000, description="Events a restarted shard replays at most, about: the shard "
        "snapshots each partition once per this many journaled events when that comes "
        "before snapshot_interval_s. About 5 s of restart on one core (bench_durability.py: "
        "40,000 events/s at stop 45; 100,000 took as long at stop 34). Fewer mean more "
        "snapshots under load: at 100,000 a saturated shard saved 1.6 times the customers")
    turn_events: PositiveInt = Field(
        256, description="Events of a batch applied before other calls get a turn (an "
        "inbound Decide waits for one turn, not for the whole batch)"
    )
    turn_customers: PositiveInt = Field(
        128, description="Customers decided or settled before other calls get a turn"
    )
    max_queued_events: PositiveInt = Field(
        100_000, description="Events waiting for the shard past which a client's direct "
        "submit (frames edge, with Routes) is refused with a retry-after"
    )


class ArbitrationConfig(_Frozen):
    num_cpus: Annotated[float, Field(ge=0)] = Field(0.25, description="Ray CPU reservation")
    prior_strength: PositiveFloat = Field(
        2.0, description="Pseudo-observations behind each action's prior propensity"
    )
    explore: bool = Field(
        True, description="Thompson sampling: draw P from its posterior (off: the mean)"
    )
    save_interval_s: PositiveFloat = Field(5.0, description="How often models are saved")
    replica_refresh_s: PositiveFloat = Field(
        1.0, description="How often a shard brings its scorer replica up to the arbitrator's "
        "learned counts (a lever change reaches every replica at once)")


Role = Literal["submitter", "operator"]
Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class ApiKeyConfig(_Frozen):
    """One API key, stored as the SHA-256 of the key (``shush hash-key`` prints it)."""

    name: str = Field(min_length=1, max_length=64, description="Who holds it (logs, errors)")
    sha256: Sha256Hex = Field(description="Lower-case hex SHA-256 of the key's UTF-8 bytes")
    role: Role = Field(description="submitter: events, outcomes, decide, health; "
                       "operator: everything (levers, explain, catalogs, emergency runs)")


class GrpcSecurityConfig(_Frozen):
    """Credentials and transport security of the gRPC endpoint.

    No API keys means authentication is off (the embedded demo on loopback); ``shush run``
    warns loudly when such a server binds a non-loopback address.
    """

    api_keys: tuple[ApiKeyConfig, ...] = Field(
        (), description="Accepted keys (sent as 'authorization: Bearer <key>'); empty: no auth")
    tls_cert_path: Path | None = Field(None, description="Server certificate chain (PEM)")
    tls_key_path: Path | None = Field(None, description="Server private key (PEM)")
    tls_client_ca_path: Path | None = Field(
        None, description="CA (PEM) that client certificates must chain to: mutual TLS")

    @model_validator(mode="after")
    def _tls_complete(self) -> GrpcSecurityConfig:
        if (self.tls_cert_path is None) != (self.tls_key_path is None):
            raise ValueError("tls_cert_path and tls_key_path go together")
        if self.tls_client_ca_path is not None and self.tls_cert_path is None:
            raise ValueError("tls_client_ca_path (mutual TLS) needs tls_cert_path and "
                             "tls_key_path")
        names = [k.name for k in self.api_keys]
        hashes = [k.sha256 for k in self.api_keys]
        if len(set(names)) != len(names) or len(set(hashes)) != len(hashes):
            raise ValueError("api_keys: each name and each key appears once")
        return self

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys)

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert_path is not None


class GrpcConfig(_Frozen):
    host: str = Field("127.0.0.1", description="Address the gRPC server binds")
    port: Annotated[int, Field(ge=0, le=65535)] = Field(50051, description="0 picks a free port")
    frames_port: Annotated[int, Field(ge=0, le=65535)] | None = Field(
        None, description="Port of the frames edge: the same unary calls, keys, TLS and limits "
        "without HTTP/2, for the lowest latency (adapters/frames); 0 picks a free port; "
        "null: off")
    max_events_per_request: PositiveInt = Field(
        10_000, description="Events (or outcomes) per request; larger requests are refused")
    max_message_bytes: PositiveInt = Field(16 * 1024 * 1024, description="gRPC message limit")
    max_attributes_per_event: PositiveInt = Field(
        64, description="Attributes per event; a request with more is refused")
    max_string_chars: PositiveInt = Field(
        4096, description="Longest type, source, attribute name or text value, in characters")
    security: GrpcSecurityConfig = GrpcSecurityConfig()


class ChannelConfig(_Frozen):
    kind: Literal["jsonl"] = Field("jsonl", description="Where treatments are sent")
    path: Path = Field(Path(".shush/treatments.jsonl"), description="JSONL file of treatments")


class RetentionConfig(_Frozen):
    """How long the store keeps the history that only grows: the decision audit, the ledger
    of treatments whose send is settled (a pending one is never purged) and dead letters.
    With the bank catalog, ~2 KB per treatment: ~0.6 MB/s in a loadtest at 3,000 events/s,
    some 55 GB a day."""

    decisions_days: PositiveFloat | None = Field(
        30.0, description="Days of the decision audit kept (Explain reads it); null: forever")
    treatments_days: PositiveFloat | None = Field(
        90.0, description="Days of sent or failed treatments kept in the ledger, with their "
        "outbox rows; a key purged no longer de-duplicates, so keep this longer than any "
        "replay or redelivery may reach back; null: forever")
    dead_letters_days: PositiveFloat | None = Field(
        30.0, description="Days of dead-letter records kept; null: forever")
    purge_interval_s: PositiveFloat = Field(
        60.0, description="How often the supervisor purges what is past its retention")
    purge_chunk_rows: PositiveInt = Field(
        200, description="Rows deleted per transaction, the shards' writes going in between "
        "(SQLite, 100,000 treatments: a chunk of 200 holds the write lock ~3.5 ms, of "
        "1,000 ~18 ms)")


class EngineConfig(_Frozen):
    num_routers: PositiveInt = Field(1, description="Router actors")
    num_shards: PositiveInt = Field(2, description="Shard actors hosting customers")
    num_arbitrators: PositiveInt = Field(1, description="Arbitration actors")
    num_partitions: PositiveInt = Field(1024, description="Fixed logical partitions")
    namespace: str = Field("shush", description="Ray namespace of the engine's named actors")
    catalog_paths: tuple[Path, ...] = Field(
        (), description="Catalog YAML files; empty means the bundled bank catalog"
    )
    data_dir: Path = Field(Path(".shush"), description="Files the engine writes")
    store_url: str | None = Field(
        None, description="memory://, sqlite:///path.db or postgresql://...; "
        "default: SQLite in data_dir"
    )
    clock: Literal["system", "event"] = Field(
        "system", description="'event': engine time follows event time (replays)"
    )
    call_timeout_s: PositiveFloat = Field(30.0, description="Longest wait on any actor call")
    gil_switch_interval_ms: PositiveFloat = Field(
        1.0, description="How long an actor's busy loop keeps the GIL from Ray's threads, "
        "which deliver its calls and replies (Python's default: 5 ms; actors.gil)")
    health_interval_s: PositiveFloat = Field(1.0, description="Supervisor health-check period")
    recreate_after_s: PositiveFloat = Field(
        120.0, description="How long an actor Ray is restarting may stay unreachable before "
        "the supervisor re-creates it (a restarting shard reloads its snapshots and replays "
        "up to shard.max_replay_events first)")
    router: RouterConfig = RouterConfig()
    shard: ShardConfig = ShardConfig()
    arbitration: ArbitrationConfig = ArbitrationConfig()
    grpc: GrpcConfig = GrpcConfig()
    channel: ChannelConfig = ChannelConfig()
    sweep: SweepConfig = SweepConfig()
    runs: RunsConfig = RunsConfig()
    retention: RetentionConfig = RetentionConfig()
    scheduled_runs: tuple[ScheduledRun, ...] = Field(
        (), description="Named recurring runs (cron + population filter + moment)"
    )

    @property
    def resolved_store_url(self) -> str:
        return self.store_url or f"sqlite:///{(self.data_dir / 'shush.db').resolve()}"

    def partition_table(self) -> PartitionTable:
        """Which shard hosts each partition: the same for every actor and the edge."""
        return PartitionTable.round_robin(self.num_partitions, self.num_shards)
