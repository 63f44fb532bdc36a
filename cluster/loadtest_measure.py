"""The load test's measurements: latency histograms, Ray process resources, the treatments
file tail and the matching of treatments to the events that caused them."""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
from hdrh.histogram import HdrHistogram

from .loadtest_workload import PERCENTILES, RAY_DAEMONS, TRIGGER_MOMENT


class LatencyHistogram:
    """An HdrHistogram of latencies recorded in ms, kept in µs (1 µs .. 1 h, 3 digits)."""

    def __init__(self) -> None:
        self.hist = HdrHistogram(1, 3_600_000_000, 3)

    def record_ms(self, value_ms: float) -> None:
        self.hist.record_value(min(max(int(value_ms * 1000), 1), 3_600_000_000))

    def add(self, other: LatencyHistogram) -> None:
        self.hist.add(other.hist)

    def encode(self) -> bytes:
        encoded: bytes = self.hist.encode()
        return encoded

    @classmethod
    def decode(cls, data: bytes) -> LatencyHistogram:
        made = cls()
        made.hist.add(HdrHistogram.decode(data))
        return made

    @property
    def count(self) -> int:
        return int(self.hist.get_total_count())

    def percentile_ms(self, percentile: float) -> float:
        return float(self.hist.get_value_at_percentile(percentile)) / 1000

    def summary(self, *, mean: bool = True) -> dict[str, float | int | None]:
        """count, p50/p95/p99/p99.9, max and mean in ms (``None`` when empty). The mean walks
        every bucket in Python (~70 ms for a 3-digit histogram): the live view, once a
        second on a machine the engine shares, goes without it."""
        if not self.count:
            return {"count": 0, **{name: None for name, _ in PERCENTILES}, "max": None,
                    "mean": None}
        return {"count": self.count,
                **{name: round(self.percentile_ms(p), 3) for name, p in PERCENTILES},
                "max": round(self.hist.get_max_value() / 1000, 3),
                "mean": round(self.hist.get_mean_value() / 1000, 3) if mean else None}


# -- resources -------------------------------------------------------------------------------

def is_ray_process(name: str, cmdline: Sequence[str]) -> bool:
    """Ray workers (``ray::Actor.method``), the raylet and the GCS server."""
    joined = " ".join(cmdline)
    return name in RAY_DAEMONS or "ray::" in joined or "raylet" in joined or \
        name.startswith("ray::")


ACTOR_ROLES = (("ShardActor", "shards"), ("RouterActor", "routers"),
               ("ArbitrationActor", "arbitrators"), ("SupervisorActor", "supervisor"))
DRIVER_ROLE = "driver"
LOAD_ROLE = "load generator"
STORE_ROLE = "store server"
LOCAL_HOSTS = ("", "localhost", "127.0.0.1", "::1")


def local_postgres_pids(store_url: str | None) -> list[int]:
    """When ``store_url`` names a PostgreSQL server on this machine, the postmasters running
    here (a ``postgres`` process whose parent is not one: all of them, not only the one on
    the URL's port); nothing for another store or host. Their processes share the cores
    with the engine, so the load test counts their CPU."""
    url = urlsplit(store_url or "")
    if url.scheme not in ("postgresql", "postgres") or (url.hostname or "") not in LOCAL_HOSTS:
        return []
    postgres = {proc.pid: proc.info["ppid"]
                for proc in psutil.process_iter(["name", "ppid"])
                if (proc.info["name"] or "").startswith("postgres")}
    return [pid for pid, parent in postgres.items() if parent not in postgres]


def process_role(cmdline: Sequence[str]) -> str:
    """What a Ray process does for the engine, by its title (``ray::ShardActorBody.submit``):
    an actor kind, or ``ray`` for Ray's own processes (raylet, GCS, agents, idle workers)."""
    joined = " ".join(cmdline)
    return next((role for name, role in ACTOR_ROLES if f"ray::{name}" in joined), "ray")


def run_queue_wait_s(pid: int) -> float | None:
    """Seconds the process's threads have spent runnable but waiting for a CPU, since they
    started (Linux ``/proc/<pid>/task/*/schedstat``, second field); ``None`` without it."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    waited_ns = 0
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as handle:
                waited_ns += int(handle.read().split()[1])
        except (OSError, ValueError, IndexError):  # a thread that just ended
            continue
    return waited_ns / 1e9


def _add_since(seen: dict[int, float], totals: dict[str, float], pid: int, role: str,
               count: float) -> None:
    """Add to ``role``'s total what the process's cumulative ``count`` grew by since its last
    sample (nothing on its first). Never below 0: a thread that ended takes its share along."""
    last = seen.get(pid)
    seen[pid] = count
    if last is not None:
        totals[role] += max(0.0, count - last)
    else:
        totals.setdefault(role, 0.0)


class ResourceSampler:
    """CPU (% of one core, summed) and RSS of the Ray processes and of extra pids, and the
    CPU time each role has used since the first sample (``cpu_seconds``), with the time its
    processes waited, runnable, for a CPU (``cpu_wait_seconds``: on a busy machine a call's
    every hop waits so, whatever the code does).

    With ``extra_pids`` (an embedded engine's process: its driver), the processes descending
    from them count (Ray's, its Python daemons included), so other Ray sessions on the machine
    stay out; otherwise every Ray process. The load generator is this process and its other
    children. ``store_pids`` (a local database server: ``local_postgres_pids``) and the
    processes descending from them count as the store server (``STORE_ROLE``), all of them,
    whoever they serve.

    Which processes those are, and their roles, is looked up every ``rediscover_every``
    samples; the samples between read only the processes known. Looking through every
    process's name and command line, and the process tree twice, each second was half of the
    load test's coordinator's CPU (py-spy), as much as a sender's at 20,000 events/s. A
    process first seen at a later lookup counts from there, as any did from the first sample.
    """

    def __init__(self, extra_pids: Sequence[int] = (), rediscover_every: int = 2, *,
                 store_pids: Sequence[int] = ()) -> None:
        self.extra_pids = set(extra_pids)
        self.store_pids = set(store_pids)
        self.rediscover_every = rediscover_every
        self._samples = 0
        # the engine's processes (role; extra: an extra pid), the load generator's and the
        # store server's
        self._engine: dict[int, tuple[psutil.Process, str, bool]] = {}
        self._load: dict[int, psutil.Process] = {}
        self._store: dict[int, psutil.Process] = {}
        self._cpu_seen: dict[int, float] = {}  # each process's CPU time at its last sample
        self._cpu_seconds: dict[str, float] = defaultdict(float)
        self._wait_seen: dict[int, float] = {}  # each process's run-queue wait, last sample
        self._wait_seconds: dict[str, float] = defaultdict(float)

    def cpu_wait_seconds(self) -> dict[str, float]:
        """Seconds by role, since the first sample, of waiting for a CPU while runnable."""
        return {role: round(seconds, 3) for role, seconds in sorted(self._wait_seconds.items())}

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds by role since the first sample: the load test divides them by the
        events accepted, a figure that holds across rates (CPU % does not)."""
        return {role: round(seconds, 3) for role, seconds in sorted(self._cpu_seconds.items())}

    def _add_cpu(self, proc: psutil.Process, role: str) -> None:
        times = proc.cpu_times()
        _add_since(self._cpu_seen, self._cpu_seconds, proc.pid, role, times.user + times.system)
        waited = run_queue_wait_s(proc.pid)
        if waited is not None:
            _add_since(self._wait_seen, self._wait_seconds, proc.pid, role, waited)

    def _scope(self) -> set[int] | None:
        if not self.extra_pids:
            return None
        return _descendants(self.extra_pids)

    def _discover(self) -> None:
        """The engine's processes with their roles, the store server's and the load
        generator's."""
        scope = self._scope()
        engine: dict[int, tuple[psutil.Process, str, bool]] = {}
        for proc in psutil.process_iter(["pid", "name", "cmdline"]):
            pid = proc.info["pid"]
            extra = pid in self.extra_pids
            if not extra and (pid not in scope if scope is not None else not is_ray_process(
                    proc.info["name"] or "", proc.info["cmdline"] or ())):
                continue
            known = self._engine.get(pid)  # the same object: cpu_percent counts from its last
            engine[pid] = (known[0] if known else proc,
                           DRIVER_ROLE if extra else process_role(proc.info["cmdline"] or ()),
                           extra)
        self._engine = engine
        store: dict[int, psutil.Process] = {}
        for pid in self.store_pids | _descendants(self.store_pids):
            try:
                store[pid] = self._store.get(pid) or psutil.Process(pid)
            except psutil.NoSuchProcess:
                continue
        self._store = store
        me = psutil.Process()
        self._load = {p.pid: self._load.get(p.pid, p) for p in (
            me, *(c for c in me.children(recursive=True)
                  if c.pid not in self.extra_pids and c.pid not in (scope or engine)
                  and c.pid not in store))}

    def sample(self) -> dict[str, float]:
        if self._samples % self.rediscover_every == 0:
            self._discover()
        self._samples += 1
        ray_cpu = ray_rss = extra_cpu = extra_rss = 0.0
        count = 0
        for pid, (proc, role, extra) in list(self._engine.items()):
            try:
                cpu = proc.cpu_percent(None)
                rss = float(proc.memory_info().rss)
                self._add_cpu(proc, role)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                del self._engine[pid]
                continue
            if extra:
                extra_cpu, extra_rss = extra_cpu + cpu, extra_rss + rss
            else:
                ray_cpu, ray_rss, count = ray_cpu + cpu, ray_rss + rss, count + 1
        for known, role in ((self._load, LOAD_ROLE), (self._store, STORE_ROLE)):
            for pid, proc in list(known.items()):
                try:
                    self._add_cpu(proc, role)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    del known[pid]
        seen = self._engine.keys() | self._load.keys() | self._store.keys()
        for pid in set(self._cpu_seen) - seen:
            del self._cpu_seen[pid]
            self._wait_seen.pop(pid, None)
        return {"ray_cpu_pct": ray_cpu, "ray_rss_mb": ray_rss / 1e6, "ray_processes": count,
                "driver_cpu_pct": extra_cpu, "driver_rss_mb": extra_rss / 1e6,
                "machine_cpu_pct": psutil.cpu_percent(None) * (psutil.cpu_count() or 1)}


def _descendants(pids: set[int]) -> set[int]:
    found: set[int] = set()
    for pid in pids:
        try:
            found.update(c.pid for c in psutil.Process(pid).children(recursive=True))
        except psutil.NoSuchProcess:
            continue
    return found


# -- the treatments file ---------------------------------------------------------------------

class TreatmentTail:
    """Follows the treatments JSONL file from its current end; yields complete records.

    With ``containing``, only the lines that hold those bytes are decoded: the load test
    needs its triggers' treatments, about a fifth of the lines, and decoding every line was
    a fifth of its coordinator's CPU (py-spy, 30,000 events/s), on the cores the engine uses.
    ``lines`` counts every complete line read, decoded or not: all the treatments fired.
    """

    def __init__(self, path: Path, containing: bytes = b"") -> None:
        self.path = path
        self.containing = containing
        self._offset = path.stat().st_size if path.exists() else 0
        self._partial = b""
        self.lines = 0

    def poll(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as handle:
            handle.seek(self._offset)
            chunk = handle.read()
        self._offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()
        self.lines += len(lines)
        return [json.loads(line) for line in lines if self.containing in line and line.strip()]


class LatencyMatcher:
    """Pairs each trigger (customer, scheduled ms) with its treatment, in either order."""

    def __init__(self, start_wall_s: float) -> None:
        self.start_wall_s = start_wall_s
        self.pending: dict[str, int] = {}
        self.orphans: dict[str, int] = {}
        self.total = LatencyHistogram()
        self.by_second: dict[int, LatencyHistogram] = defaultdict(LatencyHistogram)

    def trigger(self, customer: str, scheduled_ms: int) -> None:
        decided = self.orphans.pop(customer, None)
        if decided is None:
            self.pending[customer] = scheduled_ms
        else:
            self._record(scheduled_ms, decided)

    def treatment(self, record: dict[str, Any]) -> None:
        if (record.get("payload") or {}).get("moment") != TRIGGER_MOMENT:
            return
        customer, decided = record["customer_id"], int(record["decided_at_ms"])
        scheduled = self.pending.pop(customer, None)
        if scheduled is None:
            self.orphans[customer] = decided
        else:
            self._record(scheduled, decided)

    def _record(self, scheduled_ms: int, decided_ms: int) -> None:
        latency_ms = decided_ms - scheduled_ms
        self.total.record_ms(latency_ms)
        self.by_second[int(scheduled_ms / 1000 - self.start_wall_s)].record_ms(latency_ms)


def steps_between(before: dict[str, Any], after: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A shard's steps between two of its health readings (``actors.step_times`` wire form):
    per kind of step, how many, their total time, and the bucket bounds their median, 99th
    percentile and longest fell in ("<= 5" ms, or "> 500" past the last bound)."""
    bounds = after["bounds_ms"]
    earlier = before.get("steps", {})
    out: dict[str, dict[str, Any]] = {}
    for step, now in after["steps"].items():
        then = earlier.get(step, {"counts": [0] * len(now["counts"]), "total_ms": 0.0})
        counts = [b - a for a, b in zip(then["counts"], now["counts"], strict=True)]
        n = sum(counts)
        if not n:
            continue

        def bucket(rank: int, counts: list[int] = counts) -> str:
            seen = 0
            for i, count in enumerate(counts):
                seen += count
                if seen >= rank:
                    return f"<= {bounds[i]}" if i < len(bounds) else f"> {bounds[-1]}"
            raise AssertionError("rank beyond the counts")

        out[step] = {"count": n, "total_ms": round(now["total_ms"] - then["total_ms"], 1),
                     "p50_ms": bucket(math.ceil(n * 0.5)), "p99_ms": bucket(math.ceil(n * 0.99)),
                     "longest_ms": bucket(n)}
    return out
