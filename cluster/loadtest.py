"""Open-loop load tests of a running engine (``shush loadtest``).

A synthetic population (numpy: segment, age, zip per customer) first gets its profiles, then
client processes send events through the real gRPC client on a fixed schedule: batch ``k`` of a
process leaves at ``start + phase + k * batch_size / rate``, whether or not earlier batches
were answered, so a slow engine shows up as latency (queueing included), not as a lower rate.

What is measured:
- accepted events/s (per second and overall), rejections, retries given up, RPC errors;
- submit → treatment: a known share of events are large savings withdrawals (amount 7,000,
  bank catalog detector ``large_withdrawal``, level mode with a one-day cooldown), each on a
  customer that gets no other one, so each yields exactly one treatment. Its latency is the
  treatment's ``decided_at_ms`` (engine wall clock) minus the event's scheduled send time,
  read by tailing the treatments JSONL file;
- submit → ack (the batch's reply) from its scheduled time, and how late batches left
  (``send lag``: the client itself falling behind);
- inbound ``Decide`` latency from its scheduled time, from a separate open-loop loop at a low
  rate (a process of its own), and how late its timer let each go (``Decide send lag``: a
  part of that latency which is the load generator's own);
- CPU and resident memory of the Ray processes (and of the engine's driver process when
  embedded), sampled every ``RESOURCE_SAMPLE_S`` with psutil; CPU time by role in total and
  between each two samples (``cpu_by_window``).

Before the load it loads the population's profiles and asks the engine for a ``Checkpoint``,
so that the run does not pay for saving them (``_checkpoint``).

Latencies go into HdrHistograms (microsecond resolution, three significant digits).
Pure pieces (the schedule, the population, the histograms, the report) need no Ray.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import math
import multiprocessing as mp
import os
import queue
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from ..actors import heap
from .loadtest_measure import (
    LatencyHistogram,
    LatencyMatcher,
    ResourceSampler,
    TreatmentTail,
    steps_between,
)
from .loadtest_workload import (
    TRIGGER_MOMENT,
    EventFactory,
    LoadSpec,
    Population,
    process_rate,
    sender_slots,
    slot_offsets_s,
)

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ClientCounters:
    sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    gave_up: int = 0
    rpc_errors: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def count(self, reason: str) -> None:
        self.reasons[reason] = self.reasons.get(reason, 0) + 1


def client_main(process: int, spec: LoadSpec, tag: str, population_size: int,
                start_at: Any, go: Any, out: Any) -> None:
    """Entry point of a client process (multiprocessing, spawn)."""
    heap.collect_rarely()  # a batch's events live until it is acknowledged
    try:
        import uvloop

        uvloop.run(_client(process, spec, tag, population_size, start_at, go, out))
    except Exception as exc:  # a loop boundary: report, never hang the coordinator
        out.put(("failed", process, repr(exc)))


async def _client(process: int, spec: LoadSpec, tag: str, population_size: int,
                  start_at: Any, go: Any, out: Any) -> None:
    import grpc

    from ..adapters.client import AsyncShushClient

    population = Population(population_size, tag=tag, seed=spec.seed)
    factory = EventFactory(population, process, spec.processes, spec.trigger_fraction,
                           spec.seed + 1, trigger_rows=spec.trigger_customers())
    rate = process_rate(spec.rate_eps, spec.processes)
    slots = slot_offsets_s(rate, spec.batch_size, spec.duration_s, process / spec.processes)
    counters = ClientCounters()
    ack = LatencyHistogram()
    lag = LatencyHistogram()
    triggers: list[tuple[str, int]] = []
    per_second: dict[int, list[int]] = defaultdict(lambda: [0, 0])  # second -> sent, accepted
    async with AsyncShushClient(spec.target, batch_size=spec.batch_size,
                                timeout_s=spec.timeout_s, frames_target=spec.frames_target,
                                direct_to_shards=spec.direct_to_shards) as client:
        await client.health()
        heap.freeze_resident()  # what lives through the run, out of the collector's sight
        out.put(("ready", process, None))
        await asyncio.get_running_loop().run_in_executor(None, go.wait)
        start = float(start_at.value)

        async def sender(index: int) -> None:
            for k in sender_slots(len(slots), index, spec.senders):
                at = start + float(slots[k])
                delay = at - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                lag.record_ms(max(0.0, time.time() - at) * 1000)
                batch, batch_triggers = factory.make_batch(k, spec.batch_size, int(at * 1000))
                counters.sent += len(batch)
                per_second[int(time.time() - start)][0] += len(batch)  # by actual send time
                try:
                    result = await client.submit_wire(batch)
                except grpc.aio.AioRpcError as exc:
                    counters.rpc_errors += len(batch)
                    counters.count(exc.code().name)
                    continue
                except TimeoutError:
                    counters.gave_up += len(batch)
                    counters.count("retries exhausted")
                    continue
                ack.record_ms((time.time() - at) * 1000)
                counters.accepted += result.accepted
                counters.duplicates += result.duplicates
                counters.rejected += len(result.rejected)
                per_second[int(time.time() - start)][1] += result.accepted  # by reply time
                for rejection in result.rejected[:3]:
                    counters.count(f"rejected: {rejection.reason}")
                if result.rejected:  # rare: find which triggers were refused
                    refused = {r.event_id for r in result.rejected}
                    triggers.extend(t for t, e in zip(batch_triggers, _trigger_ids(batch),
                                                      strict=True) if e not in refused)
                else:
                    triggers.extend(batch_triggers)

        async def reporter() -> None:
            while True:
                await asyncio.sleep(0.5)
                flush()

        def flush() -> None:
            out.put(("tick", process, {"counters": asdict(counters),
                                       "per_second": dict(per_second),
                                       "triggers": list(triggers),
                                       "pool_exhausted": factory.pool_exhausted}))
            triggers.clear()
            per_second.clear()

        report = asyncio.create_task(reporter())
        await asyncio.gather(*(sender(i) for i in range(spec.senders)))
        report.cancel()
        flush()
        out.put(("done", process, {"ack": ack.encode(), "lag": lag.encode(),
                                   "span_s": time.time() - start}))


def _trigger_ids(batch: list[list[Any]]) -> list[str]:
    return [e[0] for e in batch if e[2] == "savings_withdrawal" and e[5]["amount"] >= 5_000]


# -- the coordinator -------------------------------------------------------------------------

@dataclass(slots=True)
class Progress:
    """What the live view shows, once a second."""

    elapsed_s: float
    duration_s: float
    target_eps: float
    sent_eps: float
    accepted_eps: float
    accepted: int
    errors: int
    rejected: int
    treatments: int
    triggers: int
    e2e: dict[str, Any]
    decide: dict[str, Any]
    resources: dict[str, float]


# Seconds between two samples of the engine's processes (CPU, memory, run-queue waits): a
# sample reads ~340 files under /proc, ~13 ms of CPU in one burst, on the two cores the engine
# runs on: every second that is ~1.3 us of CPU per event at 10,000 events/s. Every 5 s, the
# load generator (this process included) took 19.9-20.4 us per event against 19.6-24.7;
# Decide and submit -> treatment latencies moved within the noise (stop 42 in
# docs/performance-history.md).
# CPU time by role is a running count either way.
RESOURCE_SAMPLE_S = 5.0
DECIDE_PROCESS = -1  # the Decide process's tag on the queue (client processes count from 0)


@dataclass(slots=True)
class _Totals:
    counters: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    reasons: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    per_second: dict[int, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    pool_exhausted: dict[int, int] = field(default_factory=dict)
    last: dict[int, dict[str, int]] = field(default_factory=dict)
    triggers: int = 0
    decide: LatencyHistogram = field(default_factory=LatencyHistogram)
    decide_lag: LatencyHistogram = field(default_factory=LatencyHistogram)
    decide_errors: dict[str, int] = field(default_factory=dict)


async def run_load(spec: LoadSpec, *, tag: str | None = None, extra_pids: Sequence[int] = (),
                   store_pids: Sequence[int] = (),
                   on_progress: Callable[[Progress], None] | None = None) -> dict[str, Any]:
    """Profiles first, then the open-loop run; returns the report (see ``build_report``).
    ``extra_pids`` and ``store_pids``: see ``ResourceSampler``."""
    from ..adapters.client import AsyncShushClient

    tag = tag or f"lt{os.urandom(3).hex()}"
    population = Population(spec.population_size(), tag=tag, seed=spec.seed)
    started = time.perf_counter()
    async with AsyncShushClient(spec.target, batch_size=1000, timeout_s=spec.timeout_s) as client:
        profiles = list(population.profile_batches(1000, int(time.time() * 1000)))
        for offset in range(0, len(profiles), 4):
            await asyncio.gather(*(client.submit_wire(b) for b in profiles[offset:offset + 4]))
        profile_s = time.perf_counter() - started
        saved = await _checkpoint(client)
        checkpoint_s = time.perf_counter() - started - profile_s
        before = await _shard_timings(client)

    tail = TreatmentTail(spec.channel_path, TRIGGER_MOMENT.encode())  # the matcher's lines
    ctx = mp.get_context("spawn")
    start_at, go, out = ctx.Value("d", 0.0), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=client_main, daemon=True,
                         args=(p, spec, tag, len(population), start_at, go, out))
             for p in range(spec.processes)]
    helpers = [ctx.Process(target=decide_main, daemon=True,
                           args=(spec, tag, len(population), start_at, go, out))
               ] if spec.decide_rate_hz > 0 else []
    for proc in procs + helpers:
        proc.start()
    try:
        report = await _coordinate(spec, population, tail, procs, helpers, start_at, go, out,
                                   extra_pids, store_pids, profile_s, on_progress)
        report["profiles"].update(saved=saved, checkpoint_s=round(checkpoint_s, 2))
        async with AsyncShushClient(spec.target, timeout_s=spec.timeout_s) as client:
            after = await _shard_timings(client)
        for key in SHARD_TIMINGS:
            report[f"shard_{key}"] = [
                steps_between(a[key], b[key]) if a.get(key) and b.get(key) else {}
                for a, b in zip(before, after, strict=False)]
        report["shard_snapshots"] = [
            {**{key: b[key] - a[key] for key in SHARD_SNAPSHOTS},
             "replay_backlog": b["replay_backlog"]}
            for a, b in zip(before, after, strict=False)]
        # events the shards took from the clients themselves, not through a router (a shard
        # restarted in the run counts from its restart)
        report["shard_events_direct"] = [max(0, b["events_direct"] - a["events_direct"])
                                         for a, b in zip(before, after, strict=False)]
        return report
    finally:
        for proc in procs + helpers:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()


# in shard health: its loop steps, what reached it how, and its store's write transactions
SHARD_TIMINGS = ("steps", "way_in", "store_writes")


# in shard health: its snapshot counters, and what a restart would replay (events)
SHARD_SNAPSHOTS = ("snapshot_rows", "catch_ups")


async def _shard_timings(client: Any) -> list[dict[str, Any]]:
    """Each shard's loop steps, way in and store writes so far (``actors.step_times`` wire
    form; empty for a shard that did not answer), its snapshot counters and replay backlog,
    and the events clients sent it directly."""
    _, detail = await client.health()
    return [{**{key: shard.get(key, {}) for key in SHARD_TIMINGS},
             **{key: shard.get(key, 0) for key in (*SHARD_SNAPSHOTS, "replay_backlog",
                                                    "events_direct")}}
            for shard in detail.get("shards", [])]


async def _checkpoint(client: Any) -> int | None:
    """Snapshot the profiles before the load (``Checkpoint``): customers saved. Otherwise
    the first snapshot rounds of the run save the whole population loaded seconds before
    (in a 120-s run at 50,000 events/s, the shards used 6.1-7.2 times the load generator's
    CPU per event in the first 20 s, and 5.7-5.9 times from there to the end). ``None``
    when the engine refuses (a submitter's API key, an engine without the call): the run
    then pays for those snapshots, as before."""
    import grpc

    try:
        saved: int = await client.checkpoint()
        return saved
    except grpc.aio.AioRpcError as exc:
        if exc.code() not in (grpc.StatusCode.PERMISSION_DENIED,
                              grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNIMPLEMENTED):
            raise
        log.warning("no checkpoint after the profiles (%s): the run's first snapshot rounds "
                    "save them", exc.details())
        return None


async def _coordinate(spec: LoadSpec, population: Population, tail: TreatmentTail,
                      procs: list[Any], helpers: list[Any], start_at: Any, go: Any, out: Any,
                      extra_pids: Sequence[int], store_pids: Sequence[int], profile_s: float,
                      on_progress: Callable[[Progress], None] | None) -> dict[str, Any]:
    ready = 0
    while ready < len(procs) + len(helpers):
        kind, process, detail = await asyncio.get_running_loop().run_in_executor(
            None, out.get, True, 120)
        if kind == "failed":
            raise RuntimeError(f"client process {process} failed: {detail}")
        ready += kind == "ready"
    start = time.time() + 1.0
    start_at.value = start
    go.set()
    matcher = LatencyMatcher(start)
    totals = _Totals()
    done: dict[int, dict[str, bytes]] = {}
    sampler = ResourceSampler(extra_pids, store_pids=store_pids)
    sample = sampler.sample()  # prime cpu_percent
    samples: list[dict[str, float]] = []
    drain_until = math.inf
    next_progress = next_sample = start
    while True:
        _drain_queue(out, totals, matcher, done)
        for record in tail.poll():
            matcher.treatment(record)
        now = time.time()
        if now >= next_progress:
            next_progress += 1.0
            if now >= next_sample:
                next_sample += RESOURCE_SAMPLE_S
                sample = sampler.sample()
                sample["t_s"] = round(now - start, 1)
                sample["cpu_s"] = sampler.cpu_seconds()  # since the first sample, by role
                samples.append(sample)
            if now >= start and on_progress is not None:
                on_progress(_progress(spec, start, now, totals, matcher, totals.decide,
                                      sample))
        if len(done) == len(procs) and drain_until == math.inf:
            drain_until = time.time() + spec.drain_s
        if time.time() >= drain_until or (drain_until < math.inf and not matcher.pending):
            break
        if not any(p.is_alive() for p in procs) and len(done) < len(procs):
            _drain_queue(out, totals, matcher, done)
            if len(done) < len(procs):
                raise RuntimeError("a client process died; see its output above")
        await asyncio.sleep(0.1)
    sampler.sample()  # CPU by role up to the end of the drain
    for helper in helpers:  # the Decide process ends with its last report
        await asyncio.get_running_loop().run_in_executor(None, helper.join, spec.timeout_s)
    _drain_queue(out, totals, matcher, done)
    ack, lag = LatencyHistogram(), LatencyHistogram()
    span_s = max([spec.duration_s, *(float(d["span_s"]) for d in done.values())])
    for histograms in done.values():
        ack.add(LatencyHistogram.decode(histograms["ack"]))
        lag.add(LatencyHistogram.decode(histograms["lag"]))
    return build_report(spec, totals=totals, matcher=matcher, ack=ack, lag=lag,
                        decide=totals.decide, decide_lag=totals.decide_lag,
                        decide_errors=totals.decide_errors, samples=samples,
                        cpu_seconds=sampler.cpu_seconds(),
                        cpu_wait_seconds=sampler.cpu_wait_seconds(),
                        population=len(population), profile_s=profile_s, span_s=span_s,
                        fired=tail.lines)


def _drain_queue(out: Any, totals: _Totals, matcher: LatencyMatcher,
                 done: dict[int, dict[str, bytes]]) -> None:
    while True:
        try:
            kind, process, detail = out.get_nowait()
        except queue.Empty:
            return
        if kind == "failed":
            raise RuntimeError(f"client process {process} failed: {detail}")
        if kind == "done":
            done[process] = detail
            continue
        if kind == "decide":  # the Decide process's histogram so far
            totals.decide = LatencyHistogram.decode(detail["hist"])
            totals.decide_lag = LatencyHistogram.decode(detail["lag"])
            totals.decide_errors = detail["errors"]
            continue
        if kind != "tick":
            continue
        totals.last[process] = {k: v for k, v in detail["counters"].items() if k != "reasons"}
        for reason, n in detail["counters"]["reasons"].items():
            totals.reasons[f"{process}:{reason}"] = n
        for second, (sent, accepted) in detail["per_second"].items():
            totals.per_second[int(second)][0] += sent
            totals.per_second[int(second)][1] += accepted
        totals.pool_exhausted[process] = detail["pool_exhausted"]
        for customer, scheduled_ms in detail["triggers"]:
            totals.triggers += 1
            matcher.trigger(customer, scheduled_ms)
        totals.counters = defaultdict(int)
        for counters in totals.last.values():
            for key, value in counters.items():
                totals.counters[key] += value


def decide_main(spec: LoadSpec, tag: str, population_size: int, start_at: Any, go: Any,
                out: Any) -> None:
    """Entry point of the Decide process: inbound Decides at ``decide_rate_hz``, open loop.
    A process of its own, so the coordinator's work (tailing treatments, sampling processes)
    never delays a reply and inflates the figure."""
    try:
        import uvloop

        uvloop.run(_decides(spec, tag, population_size, start_at, go, out))
    except Exception as exc:  # a loop boundary: report, never hang the coordinator
        out.put(("failed", DECIDE_PROCESS, repr(exc)))


async def _decides(spec: LoadSpec, tag: str, population_size: int, start_at: Any, go: Any,
                   out: Any) -> None:
    import grpc

    from ..adapters.client import AsyncShushClient

    population = Population(population_size, tag=tag, seed=spec.seed)
    rng = np.random.default_rng(spec.seed + 2)
    interval = 1.0 / spec.decide_rate_hz
    hist = LatencyHistogram()
    lag = LatencyHistogram()  # how late the timer let each Decide go (counted in ``hist``)
    errors: dict[str, int] = defaultdict(int)
    tasks: set[asyncio.Task[None]] = set()

    def report(kind: str) -> None:
        out.put((kind, DECIDE_PROCESS, {"hist": hist.encode(), "lag": lag.encode(),
                                        "errors": dict(errors)}))

    async with AsyncShushClient(spec.target, timeout_s=spec.timeout_s, max_attempts=1,
                                frames_target=spec.frames_target,
                                direct_to_shards=spec.direct_to_shards) as client:
        await client.health()
        out.put(("ready", DECIDE_PROCESS, None))
        await asyncio.get_running_loop().run_in_executor(None, go.wait)
        start = float(start_at.value)

        async def one(at: float, customer: str) -> None:
            lag.record_ms(max(0.0, time.time() - at) * 1000)
            try:
                await client.decide(customer, "web")
                hist.record_ms((time.time() - at) * 1000)  # from its scheduled time
            except grpc.aio.AioRpcError as exc:
                errors[exc.code().name] += 1

        at, next_report = start, start + 0.5
        while at < start + spec.duration_s:
            delay = at - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(at, population.ids[int(rng.integers(
                len(population)))]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            at += interval
            if time.time() >= next_report:
                report("decide")
                next_report += 0.5
        if tasks:
            await asyncio.wait(tasks, timeout=spec.timeout_s)
    report("decide")


def _progress(spec: LoadSpec, start: float, now: float, totals: _Totals,
              matcher: LatencyMatcher, decide: LatencyHistogram,
              sample: dict[str, float]) -> Progress:
    second = int(now - start) - 1
    sent, accepted = totals.per_second.get(second, [0, 0])
    c = totals.counters
    return Progress(
        elapsed_s=now - start, duration_s=spec.duration_s, target_eps=spec.rate_eps,
        sent_eps=sent, accepted_eps=accepted, accepted=c["accepted"],
        errors=c["rpc_errors"] + c["gave_up"], rejected=c["rejected"],
        treatments=matcher.total.count, triggers=totals.triggers,
        e2e=matcher.total.summary(mean=False), decide=decide.summary(mean=False),
        resources=sample)


# -- the report ------------------------------------------------------------------------------

def _mean(values: Sequence[float]) -> float | None:
    return round(float(np.mean(values)), 1) if values else None


def build_report(spec: LoadSpec, *, totals: _Totals, matcher: LatencyMatcher,
                 ack: LatencyHistogram, lag: LatencyHistogram, decide: LatencyHistogram,
                 decide_lag: LatencyHistogram, decide_errors: dict[str, int],
                 samples: list[dict[str, float]],
                 cpu_seconds: dict[str, float], population: int, profile_s: float,
                 span_s: float, fired: int, cpu_wait_seconds: dict[str, float] | None = None
                 ) -> dict[str, Any]:
    c = totals.counters
    seconds = sorted(s for s in totals.per_second if 0 <= s < math.ceil(span_s))
    timeline = []
    for second in seconds:
        sent, accepted = totals.per_second[second]
        hist = matcher.by_second.get(second)
        summary = hist.summary() if hist else LatencyHistogram().summary()
        timeline.append({"t_s": second, "sent": sent, "accepted": accepted,
                         "e2e_p50_ms": summary["p50"], "e2e_p95_ms": summary["p95"],
                         "e2e_p99_ms": summary["p99"], "treatments": summary["count"]})
    return report_dict(
        spec=spec, population=population, profile_s=profile_s, span_s=span_s, counters=dict(c),
        reasons=dict(totals.reasons), pool_exhausted=sum(totals.pool_exhausted.values()),
        triggers=totals.triggers, unmatched=len(matcher.pending),
        missing_sample=sorted(matcher.pending)[:10], fired=fired,
        e2e=matcher.total.summary(), ack=ack.summary(), lag=lag.summary(),
        decide=decide.summary(), decide_lag=decide_lag.summary(),
        decide_errors=decide_errors, samples=samples,
        cpu_seconds=cpu_seconds, cpu_wait_seconds=cpu_wait_seconds, timeline=timeline)


def report_dict(*, spec: LoadSpec, population: int, profile_s: float, span_s: float,
                counters: dict[str, int], reasons: dict[str, int], pool_exhausted: int,
                triggers: int, unmatched: int, missing_sample: list[str], fired: int,
                e2e: dict[str, Any],
                ack: dict[str, Any], lag: dict[str, Any], decide: dict[str, Any],
                decide_lag: dict[str, Any], decide_errors: dict[str, int],
                samples: list[dict[str, float]], timeline: list[dict[str, Any]],
                cpu_seconds: dict[str, float] | None = None,
                cpu_wait_seconds: dict[str, float] | None = None) -> dict[str, Any]:
    """The JSON report: plain dicts, lists and numbers.

    Rates divide by ``span_s``, from the scheduled start to the last reply: an engine that
    falls behind stretches the run, and its achieved rate drops below the target.
    """
    duration = max(span_s, spec.duration_s)
    ray_cpu = [s["ray_cpu_pct"] for s in samples]
    ray_rss = [s["ray_rss_mb"] for s in samples]
    driver_cpu = [s["driver_cpu_pct"] for s in samples]
    machine_cpu = [s["machine_cpu_pct"] for s in samples]
    return {
        "version": 1,
        "spec": {"target": spec.target, "frames_target": spec.frames_target,
                 "direct_to_shards": spec.direct_to_shards,
                 "rate_eps": spec.rate_eps, "duration_s": duration,
                 "batch_size": spec.batch_size, "senders": spec.senders,
                 "processes": spec.processes, "customers": population,
                 "trigger_fraction": spec.trigger_fraction,
                 "decide_rate_hz": spec.decide_rate_hz, "channel_path": str(spec.channel_path)},
        "profiles": {"customers": population, "seconds": round(profile_s, 2)},
        "throughput": {
            "target_eps": spec.rate_eps,
            "sent_eps": round(counters.get("sent", 0) / duration, 1),
            "accepted_eps": round(counters.get("accepted", 0) / duration, 1),
            "sent": counters.get("sent", 0), "accepted": counters.get("accepted", 0),
            "span_s": round(duration, 2)},
        "errors": {"rejected": counters.get("rejected", 0),
                   "duplicates": counters.get("duplicates", 0),
                   "rpc_errors": counters.get("rpc_errors", 0),
                   "gave_up": counters.get("gave_up", 0), "reasons": reasons,
                   "decide_errors": decide_errors,
                   "trigger_pool_exhausted": pool_exhausted},
        "latency_ms": {"submit_to_treatment": e2e, "submit_to_ack": ack, "send_lag": lag,
                       "decide": decide, "decide_send_lag": decide_lag},
        "treatments": {"triggers": triggers, "matched": e2e["count"],
                       "missing": unmatched, "missing_sample": missing_sample,
                       "fired": fired},
        "resources": {"ray_cpu_pct_mean": _mean(ray_cpu),
                      "ray_cpu_pct_max": max(ray_cpu) if ray_cpu else None,
                      "ray_rss_mb_max": round(max(ray_rss), 1) if ray_rss else None,
                      "driver_cpu_pct_mean": _mean(driver_cpu),
                      "machine_cpu_pct_mean": _mean(machine_cpu),
                      "cpu_count": psutil.cpu_count(),
                      "cpu_seconds": cpu_seconds or {},
                      "cpu_us_per_event": cpu_per_event(cpu_seconds or {},
                                                        counters.get("accepted", 0)),
                      "cpu_wait_seconds": cpu_wait_seconds or {},
                      "cpu_wait_per_cpu": wait_per_cpu(cpu_wait_seconds or {},
                                                       cpu_seconds or {}),
                      "cpu_by_window": cpu_by_window(samples, timeline),
                      "samples": samples},
        "timeline": timeline,
    }


def cpu_per_event(cpu_seconds: dict[str, float], accepted: int) -> dict[str, float]:
    """CPU µs per accepted event, by role and in all: what the engine's work costs whatever
    the rate, where CPU % only says how busy the machine was."""
    if not accepted:
        return {}
    per_event = {role: round(s * 1e6 / accepted, 1) for role, s in cpu_seconds.items()}
    per_event["all"] = round(sum(cpu_seconds.values()) * 1e6 / accepted, 1)
    return per_event


def cpu_by_window(samples: Sequence[dict[str, Any]], timeline: Sequence[dict[str, Any]]
                  ) -> list[dict[str, Any]]:
    """CPU seconds by role and events accepted between each two resource samples that hold
    ``cpu_s`` (the sampler's running totals), for the windows in which events were accepted
    (the timeline's seconds, by reply time, from the first sample's second to the next's).

    Within one run the load generator does the same work for every event, so its CPU per
    event moves only with the machine: a rate that drops while every role's CPU per event
    rises alike is the machine slowing; one that drops while only the engine's rises is the
    engine's work growing (``loadtest_cli.cpu_stretches`` shows them side by side)."""
    marks = [(round(s["t_s"]), s["cpu_s"]) for s in samples if "cpu_s" in s]
    windows = []
    for (start, before), (end, after) in itertools.pairwise(marks):
        accepted = sum(row["accepted"] for row in timeline if start <= row["t_s"] < end)
        if end > start and accepted:
            windows.append({"from_s": start, "to_s": end, "accepted": accepted,
                            "cpu_s": {role: round(seconds - before.get(role, 0.0), 3)
                                      for role, seconds in after.items()}})
    return windows


def wait_per_cpu(wait_seconds: dict[str, float], cpu_seconds: dict[str, float]
                 ) -> dict[str, float]:
    """By role, seconds spent runnable but waiting for a CPU per second on one: 0 on an idle
    machine; above 1, the role's processes waited longer for a core than they ran."""
    return {role: round(waited / cpu_seconds[role], 2) for role, waited in wait_seconds.items()
            if cpu_seconds.get(role, 0) > 0}


# -- step mode -------------------------------------------------------------------------------

def step_passes(report: dict[str, Any], p99_bound_ms: float, min_accepted_share: float = 0.95
                ) -> bool:
    """A step holds if p99 submit→treatment is within the bound and the rate was kept up."""
    p99 = report["latency_ms"]["submit_to_treatment"]["p99"]
    throughput = report["throughput"]
    kept_up = throughput["accepted_eps"] >= min_accepted_share * throughput["target_eps"]
    return p99 is not None and p99 <= p99_bound_ms and kept_up and \
        report["treatments"]["missing"] == 0


def sustainable_eps(steps: Sequence[dict[str, Any]], p99_bound_ms: float) -> float | None:
    """The accepted rate of the last passing step before the first failing one."""
    best: float | None = None
    for report in steps:
        if not step_passes(report, p99_bound_ms):
            break
        best = report["throughput"]["accepted_eps"]
    return best


async def run_steps(spec: LoadSpec, *, rate_from: float, rate_step: float,
                    p99_bound_ms: float, max_steps: int = 20,
                    on_progress: Callable[[Progress], None] | None = None,
                    on_step: Callable[[dict[str, Any]], None] | None = None,
                    extra_pids: Sequence[int] = (), store_pids: Sequence[int] = ()
                    ) -> dict[str, Any]:
    """Raise the rate until p99 crosses the bound (or the engine stops keeping up)."""
    steps: list[dict[str, Any]] = []
    for index in range(max_steps):
        rate = rate_from + index * rate_step
        step_spec = dataclasses.replace(spec, rate_eps=rate)
        report = await run_load(step_spec, extra_pids=extra_pids, store_pids=store_pids,
                                on_progress=on_progress)
        steps.append(report)
        if on_step is not None:
            on_step(report)
        if not step_passes(report, p99_bound_ms):
            break
    return {"version": 1, "mode": "step", "p99_bound_ms": p99_bound_ms,
            "sustainable_eps": sustainable_eps(steps, p99_bound_ms), "steps": steps}


# -- an embedded engine in its own process ---------------------------------------------------

class EmbeddedEngine:
    """Local Ray + engine + gRPC in a separate process (spawn), like ``shush run``.

    The engine's driver then has its own interpreter: it does not share a GIL with the
    coordinator (gRPC itself is served by the routers). ``target``, ``channel_path`` and
    ``pid`` are known once entered.
    """

    def __init__(self, config_path: str | None = None, *, num_cpus: int | None = None,
                 **overrides: Any) -> None:
        self.config_path = config_path
        self.num_cpus = num_cpus
        self.overrides = overrides
        self.target = ""
        self.frames_target: str | None = None  # when the config serves the frames edge
        self.channel_path = Path()
        self.pid = 0
        self._conn: Any = None
        self._proc: Any = None

    def __enter__(self) -> EmbeddedEngine:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_engine_host, daemon=False,
                                 args=(self.config_path, self.num_cpus, self.overrides, child))
        self._proc.start()
        if not self._conn.poll(180):
            self._proc.terminate()
            raise RuntimeError("the embedded engine did not start within 180 s")
        status, *detail = self._conn.recv()
        if status != "ready":
            raise RuntimeError(f"the embedded engine failed to start: {detail[0]}")
        self.target, self.frames_target, channel, self.pid = detail
        self.channel_path = Path(channel)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._conn.send("stop")
        except (BrokenPipeError, OSError):
            pass
        self._proc.join(timeout=60)
        if self._proc.is_alive():
            self._proc.terminate()


def _engine_host(config_path: str | None, num_cpus: int | None, overrides: dict[str, Any],
                 conn: Any) -> None:
    from .config_loader import load_config
    from .engine import Engine
    from .ray_runtime import start_ray, stop_ray

    try:
        config = load_config(config_path, environ=dict(os.environ), **overrides)
        start_ray(num_cpus=num_cpus, namespace=config.namespace)
        engine = Engine.start(config)
        engine.serve_grpc()
    except Exception as exc:  # a process boundary: tell the parent, then stop
        conn.send(("failed", repr(exc)))
        return
    try:
        conn.send(("ready", engine.target, engine.frames_target,
                   str(Path(config.channel.path).resolve()),
                   os.getpid()))
        conn.recv()
    except EOFError:
        pass
    finally:
        engine.stop()
        stop_ray()
