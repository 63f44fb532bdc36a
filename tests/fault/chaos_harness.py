"""Chaos: steady load through the client while shard and router actors are killed at random;
then a checker proves nothing was lost and nothing happened twice.

Shared by ``tests/fault/test_chaos.py`` (short, in CI) and ``benchmarks/chaos.py`` (longer).

How the check works. The chaos catalog has one signal type, ``ping``, and:
- every event goes to a customer of its own and makes one moment whose id carries the event id
  (``ping_seen@<event_id>``), which makes exactly one treatment, ``ack_ping``, whose idempotency
  key is therefore derived from the event id: ``<customer>|ack_ping|ping_seen@<event_id>``;
- a count detector that never fires (``applied_log``) keeps, in customer state, the id of every
  event the customer applied — without de-duplicating, so an event applied twice shows twice.
After the run the engine stops cleanly (every shard snapshots) and the checker reads:
- customer state from the store's snapshots: each acknowledged event must be in its
  customer's log exactly once (``applied``, ``lost``, ``duplicates``);
- the JSONL channel: each acknowledged event must have exactly one treatment line with its key,
  and no key may appear on two lines (``treatments``, ``treatment_duplicates``);
- the store's ledger: one row per treatment sent.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import msgpack

from shush.actors import ray_calls
from shush.adapters.client import AsyncShushClient, ShushClient, SubmitResult
from shush.adapters.stores import make_store
from shush.engine.errors import EngineUnavailable
from tests.factories import write_catalog
from tests.integration.conftest import RunningEngine, start_engine

ACTION = "ack_ping"
DETECTOR = "ping_seen"
LOG = "applied_log"

CHAOS_CATALOG: dict[str, Any] = {
    "signals": [
        {"type": "ping", "category": "behavior-account", "source": "core-banking",
         "attributes": {"n": {"type": "number", "required": True}}},
    ],
    "detectors": [
        {"id": DETECTOR, "kind": "threshold", "signal": "ping", "attribute": "n", "op": ">=",
         "value": 0, "mode": "level", "moment": "pinged", "urgency": 1.0,
         "half_life_s": 86400},
        {"id": LOG, "kind": "count", "signal": "ping", "window_s": 30 * 86400,
         "at_least": 10_000, "moment": "never", "urgency": 0.1, "half_life_s": 60,
         "internal": True},
    ],
    "actions": [
        {"id": ACTION, "kind": "service", "channel": "sms", "value": 1,
         "prior_propensity": 0.5, "moments": ["pinged"]},
    ],
}


def expected_key(customer_id: str, event_id: str) -> str:
    return f"{customer_id}|{ACTION}|{DETECTOR}@{event_id}"


@dataclass
class Batch:
    events: list[dict[str, Any]]
    started: float
    finished: float = 0.0
    acked: int = 0  # accepted + duplicates (a duplicate was taken before: it is acknowledged)
    rejected: int = 0
    error: str = ""


@dataclass
class Kill:
    kind: str
    index: int
    at: float
    actor_back_s: float | None = None   # the killed actor answers health again
    data_path_s: float | None = None    # first batch submitted after the kill fully acked


@dataclass
class ChaosReport:
    sent: int = 0
    acknowledged: int = 0
    unacknowledged: int = 0
    rejected: int = 0
    applied: int = 0
    treatments: int = 0
    ledger_rows: int = 0
    outbox_pending: int = 0        # ledger rows not yet sent when the engine stopped
    duplicates: int = 0            # events applied twice in customer state
    treatment_duplicates: int = 0  # idempotency keys on two channel lines
    lost: int = 0                  # acknowledged events missing from customer state
    lost_treatments: int = 0       # acknowledged events without their treatment
    kills: list[Kill] = field(default_factory=list)
    straight_to_shards: int = 0    # events the shards took from the client directly
    duration_s: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (self.duplicates == 0 and self.treatment_duplicates == 0 and self.lost == 0
                and self.lost_treatments == 0 and self.rejected == 0 and self.acknowledged > 0)

    def lines(self) -> list[str]:
        out = [
            f"events sent          {self.sent}",
            f"acknowledged         {self.acknowledged}  (not acknowledged: "
            f"{self.unacknowledged}, rejected: {self.rejected})",
            f"applied (in state)   {self.applied}",
            f"treatments           {self.treatments}  (ledger rows: {self.ledger_rows}, "
            f"still in the outbox: {self.outbox_pending})",
            f"duplicates           {self.duplicates} in state, {self.treatment_duplicates} "
            f"treatment keys twice  (must be 0)",
            f"lost                 {self.lost} from state, {self.lost_treatments} treatments  "
            f"(must be 0)",
            f"load ran             {self.duration_s:.1f} s, {len(self.kills)} kills; "
            f"{self.straight_to_shards} events straight to the shards since their last "
            f"restarts",
        ]
        for kill in self.kills:
            back = "never" if kill.actor_back_s is None else f"{kill.actor_back_s:.2f} s"
            path = "never" if kill.data_path_s is None else f"{kill.data_path_s:.2f} s"
            out.append(f"  kill {kill.kind}-{kill.index} at +{kill.at:.1f} s: actor back in "
                       f"{back}, data path in {path}")
        out.extend(f"problem: {p}" for p in self.problems)
        return out


# Retries span a restart: a batch is given up on only after ~1 minute of failures.
LOAD_CLIENT_SETTINGS: dict[str, Any] = {"timeout_s": 20, "max_attempts": 16, "backoff_s": 0.1}


class LoadGenerator(threading.Thread):
    """Submits ``rate`` events/s in batches through its own client until stopped: the
    blocking one over gRPC, or with ``frames_target`` the asyncio one over the frames edge,
    which sends each batch's events straight to their shards."""

    def __init__(self, target: str, *, rate: float, batch_size: int, run_id: str,
                 t0: float, frames_target: str | None = None) -> None:
        super().__init__(name="chaos-load", daemon=True)
        self.target = target
        self.frames_target = frames_target
        self.rate = rate
        self.batch_size = batch_size
        self.run_id = run_id
        self.t0 = t0
        self.batches: list[Batch] = []
        self.stopping = threading.Event()
        self._next = 0

    def _events(self) -> list[dict[str, Any]]:
        now = int(time.time() * 1000)
        events = []
        for _ in range(self.batch_size):
            i = self._next
            self._next += 1
            events.append({"event_id": f"e-{self.run_id}-{i}",
                           "customer_id": f"c-{self.run_id}-{i}", "type": "ping",
                           "occurred_at_ms": now, "source": "core-banking",
                           "attributes": {"n": float(i)}})
        return events

    FAILURES = (grpc.RpcError, TimeoutError)

    def run(self) -> None:
        if self.frames_target is not None:
            asyncio.run(self._run_over_frames(self.frames_target))
            return
        with ShushClient(self.target, batch_size=self.batch_size,
                         **LOAD_CLIENT_SETTINGS) as client:
            due = time.monotonic()
            while not self.stopping.is_set():
                batch = Batch(self._events(), time.monotonic() - self.t0)
                try:
                    self._done(batch, client.submit(batch.events))
                except self.FAILURES as exc:
                    self._done(batch, exc)
                due += self.batch_size / self.rate
                self.stopping.wait(max(0.0, due - time.monotonic()))

    async def _run_over_frames(self, frames_target: str) -> None:
        async with AsyncShushClient(self.target, batch_size=self.batch_size,
                                    frames_target=frames_target,
                                    **LOAD_CLIENT_SETTINGS) as client:
            due = time.monotonic()
            while not self.stopping.is_set():
                batch = Batch(self._events(), time.monotonic() - self.t0)
                try:
                    self._done(batch, await client.submit(batch.events))
                except self.FAILURES as exc:
                    self._done(batch, exc)
                due += self.batch_size / self.rate
                await asyncio.sleep(max(0.0, due - time.monotonic()))

    def _done(self, batch: Batch, result: SubmitResult | Exception) -> None:
        if isinstance(result, Exception):
            batch.error = f"{type(result).__name__}: {result}"[:300]
        else:
            batch.acked = result.accepted + result.duplicates
            batch.rejected = len(result.rejected)
        batch.finished = time.monotonic() - self.t0
        self.batches.append(batch)


def _actors(running: RunningEngine) -> dict[str, list[Any]]:
    supervisor = running.engine.supervisor
    return {kind: ray_calls.call_blocking(supervisor, f"get_{kind}s", timeout_s=10)
            for kind in ("shard", "router")}


def _wait_alive(name: str, namespace: str, started: float, timeout_s: float) -> float | None:
    """Seconds from ``started`` until the actor called ``name`` answers (restarted by Ray or
    re-created by the supervisor under the same name), or ``None``."""
    while time.monotonic() - started < timeout_s:
        handle = ray_calls.get_actor(name, namespace)
        try:
            if handle is not None:
                ray_calls.call_blocking(handle, "health", timeout_s=2)
                return time.monotonic() - started
        except EngineUnavailable:
            pass
        time.sleep(0.05)
    return None


def _killer(running: RunningEngine, *, kills: int, duration_s: float,
            rng: random.Random, t0: float, kinds: tuple[str, ...] = ("shard", "router")
            ) -> list[Kill]:
    """Kill ``kills`` random actors of ``kinds`` spread over ``duration_s`` (Ray restarts
    them)."""
    done: list[Kill] = []
    actors = _actors(running)
    gap = duration_s / (kills + 1)
    for n in range(kills):
        time.sleep(max(0.0, t0 + gap * (n + 1) * rng.uniform(0.8, 1.2) - time.monotonic()))
        kind = rng.choice(kinds)
        index = rng.randrange(len(actors[kind]))
        handle = actors[kind][index]
        killed_at = time.monotonic()
        kill = Kill(kind, index, killed_at - t0)
        ray_calls.kill(handle, no_restart=False)
        time.sleep(0.2)  # let the death land before asking whether it is back
        kill.actor_back_s = _wait_alive(ray_calls.actor_name(kind, index),
                                        running.engine.config.namespace, killed_at, 30.0)
        done.append(kill)
        actors = _actors(running)  # the supervisor may have re-created it: a new handle
    return done


def _data_path_recovery(kills: list[Kill], batches: list[Batch]) -> None:
    for kill in kills:
        after = [b for b in batches if b.started >= kill.at and b.acked == len(b.events)]
        if after:
            kill.data_path_s = min(b.finished for b in after) - kill.at


def _applied_logs(running: RunningEngine) -> dict[str, list[str]]:
    """Per customer, the ids of the events its state applied (the never-firing count log)."""
    store = make_store(running.engine.config.resolved_store_url)
    try:
        rows = store.load_snapshots(list(range(running.engine.config.num_partitions)))
        logs: dict[str, list[str]] = {}
        for row in rows:
            state = msgpack.unpackb(row.data, raw=False, strict_map_key=False)
            logs[state["customer_id"]] = list(
                state["detector_state"].get(LOG, {}).get("ids", []))
        return logs
    finally:
        store.close()


def _ledger(running: RunningEngine) -> tuple[int, int]:
    """Ledger rows, and those still waiting in the outbox (decided, not yet sent)."""
    store = make_store(running.engine.config.resolved_store_url)
    try:
        return store.treatment_count(), len(store.pending_outbox(100_000))
    finally:
        store.close()


def check(report: ChaosReport, batches: list[Batch], logs: dict[str, list[str]],
          treatments: list[dict[str, Any]]) -> None:
    """Fill in the checker's figures from what the client saw, the state and the channel."""
    acked = [e for b in batches if b.acked == len(b.events) for e in b.events]
    report.sent = sum(len(b.events) for b in batches)
    report.acknowledged = len(acked)
    report.unacknowledged = report.sent - report.acknowledged
    report.rejected = sum(b.rejected for b in batches)
    counts = Counter(event_id for ids in logs.values() for event_id in ids)
    report.applied = len(counts)
    report.duplicates = sum(n - 1 for n in counts.values() if n > 1)
    report.lost = sum(1 for e in acked if counts.get(e["event_id"], 0) == 0)
    keys = Counter(t["idempotency_key"] for t in treatments)
    report.treatments = len(treatments)
    report.treatment_duplicates = sum(n - 1 for n in keys.values() if n > 1)
    report.lost_treatments = sum(
        1 for e in acked if keys.get(expected_key(e["customer_id"], e["event_id"]), 0) == 0)
    for key, n in keys.items():
        if n > 1:
            report.problems.append(f"treatment key {key} sent {n} times")
    for event_id, n in counts.items():
        if n > 1:
            report.problems.append(f"event {event_id} applied {n} times")
    errors = Counter(b.error.split(":")[0] for b in batches if b.error)
    report.problems.extend(f"{n} batches failed at the client: {kind}"
                           for kind, n in errors.items())


def run_chaos(directory: Path, *, duration_s: float, rate: float, kills: int,
              batch_size: int = 20, seed: int = 7, settle_s: float = 30.0,
              straight_to_shards: bool = False, after_last_back_s: float = 0.0,
              **engine_overrides: Any) -> ChaosReport:
    """Start an engine in ``directory`` (on the current Ray), run the chaos, check, stop.
    ``straight_to_shards``: the load goes over the frames edge, each batch split by the
    routes straight to the shards (through the routers while a shard is down), and only
    shards are killed. The load runs ``duration_s``, and at least ``after_last_back_s``
    past the moment the last killed actor answered again (on a slow machine a restart can
    end with the load, leaving no time to see clients come back to a shard)."""
    directory.mkdir(parents=True, exist_ok=True)
    engine_overrides.setdefault("catalog_paths",
                                [str(write_catalog(directory, CHAOS_CATALOG, "chaos.yaml"))])
    engine_overrides.setdefault("num_routers", 2)
    engine_overrides.setdefault("num_shards", 2)
    engine_overrides.setdefault("call_timeout_s", 10.0)
    running = start_engine(directory, **engine_overrides)
    report = ChaosReport()
    stopped = False
    try:
        t0 = time.monotonic()
        load = LoadGenerator(running.engine.target, rate=rate, batch_size=batch_size,
                             run_id=uuid.uuid4().hex[:6], t0=t0,
                             frames_target=(running.engine.frames_target
                                            if straight_to_shards else None))
        load.start()
        report.kills = _killer(running, kills=kills, duration_s=duration_s,
                               rng=random.Random(seed), t0=t0,
                               kinds=("shard",) if straight_to_shards else ("shard", "router"))
        last_back = max((k.at + k.actor_back_s for k in report.kills
                         if k.actor_back_s is not None), default=0.0)
        time.sleep(max(0.0, t0 + max(duration_s, last_back + after_last_back_s)
                       - time.monotonic()))
        load.stopping.set()
        load.join(timeout=120)
        report.duration_s = time.monotonic() - t0
        batches = list(load.batches)
        _data_path_recovery(report.kills, batches)
        acked = sum(b.acked for b in batches if b.acked == len(b.events))
        running.wait_for(lambda ts: len(ts) >= acked, timeout_s=settle_s)
        # since each shard's last restart (its counter starts again)
        report.straight_to_shards = sum(s.get("events_direct", 0)
                                        for s in running.client.health()[1]["shards"])
        running.client.close()
        running.engine.stop()  # a clean stop: every shard snapshots its customers
        stopped = True
        check(report, batches, _applied_logs(running), running.treatments())
        report.ledger_rows, report.outbox_pending = _ledger(running)
    finally:
        if not stopped:
            running.client.close()
            running.engine.stop()
    return report
