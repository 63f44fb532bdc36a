"""``shush loadtest``: drive an engine at an open-loop rate and report what it sustains.

Registered in ``cli.py`` with ``main.add_command(loadtest)``. Heavy imports (numpy, psutil,
hdrhistogram, matplotlib) happen only when the command runs.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table

from ..actors.way_in import DECIDE, WayIn
from .machine_speed import describe, python_loop_ms

console = Console()


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:,.1f}"


def progress_table(progress: Any) -> Table:
    table = Table(title=f"loadtest {progress.elapsed_s:5.1f} / {progress.duration_s:.0f} s",
                  show_header=True, header_style="bold")
    for name in ("target ev/s", "sent ev/s", "accepted ev/s", "accepted", "rejected",
                 "errors", "treatments", "e2e p50 ms", "e2e p99 ms", "decide p99 ms",
                 "ray CPU %", "ray RSS MB"):
        table.add_column(name, justify="right")
    r = progress.resources
    table.add_row(f"{progress.target_eps:,.0f}", f"{progress.sent_eps:,.0f}",
                  f"{progress.accepted_eps:,.0f}", f"{progress.accepted:,}",
                  f"{progress.rejected:,}", f"{progress.errors:,}",
                  f"{progress.treatments:,}/{progress.triggers:,}", _ms(progress.e2e["p50"]),
                  _ms(progress.e2e["p99"]), _ms(progress.decide["p99"]),
                  f"{r['ray_cpu_pct']:.0f}", f"{r['ray_rss_mb']:,.0f}")
    return table


def final_table(report: dict[str, Any]) -> Table:
    table = Table(title="loadtest result", show_header=True, header_style="bold")
    table.add_column("measure")
    for name in ("count", "p50", "p95", "p99", "p99.9", "max"):
        table.add_column(name, justify="right")
    for label, key in (("submit → treatment (ms)", "submit_to_treatment"),
                       ("submit → ack (ms)", "submit_to_ack"),
                       ("send lag (ms)", "send_lag"), ("inbound Decide (ms)", "decide"),
                       ("Decide send lag (ms)", "decide_send_lag")):
        s = report["latency_ms"][key]
        table.add_row(label, f"{s['count']:,}", _ms(s["p50"]), _ms(s["p95"]), _ms(s["p99"]),
                      _ms(s["p99_9"]), _ms(s["max"]))
    return table


def _equal_parts(items: list[Any], parts: int) -> list[list[Any]]:
    """``items`` in up to ``parts`` consecutive runs of about equal length (none if empty)."""
    count = min(parts, len(items))
    bounds = [round(i * len(items) / count) for i in range(count + 1)] if count else []
    return [items[a:b] for a, b in itertools.pairwise(bounds)]


def accepted_by_stretch(report: dict[str, Any], stretches: int = 10) -> list[float]:
    """Accepted events/s in up to ``stretches`` equal stretches of the load, in order (from
    the timeline, by reply time): a rate that drifts within the run, as state piles up or a
    store slows, shows here and not in the run's mean."""
    rates = [row["accepted"] for row in report["timeline"]
             if row["t_s"] < report["spec"]["duration_s"]]
    return [sum(part) / len(part) for part in _equal_parts(rates, stretches)]


def cpu_stretches(report: dict[str, Any], stretches: int = 6) -> list[dict[str, Any]]:
    """The resource samples' windows (``cpu_by_window``) merged into up to ``stretches``
    consecutive stretches: each one's span, and its CPU µs per accepted event by role and in
    all (``loadtest.cpu_per_event``), and the shards' against the load generator's
    (``shards_x_load``; ``None`` without both)."""
    from .loadtest import cpu_per_event
    from .loadtest_measure import LOAD_ROLE

    merged = []
    for part in _equal_parts(report["resources"].get("cpu_by_window") or [], stretches):
        cpu: dict[str, float] = {}
        for window in part:
            for role, seconds in window["cpu_s"].items():
                cpu[role] = cpu.get(role, 0.0) + seconds
        per_event = cpu_per_event(cpu, sum(w["accepted"] for w in part))
        shards, load = per_event.get("shards"), per_event.get(LOAD_ROLE)
        merged.append({"from_s": part[0]["from_s"], "to_s": part[-1]["to_s"],
                       "us_per_event": per_event,
                       "shards_x_load": round(shards / load, 2) if shards and load else None})
    return merged


def _stretch_cpu(stretch: dict[str, Any]) -> str:
    """``0-10 s 33.1 (shards 21.2, 6.20 x the load generator)``."""
    per_event = stretch["us_per_event"]
    shown = f"{stretch['from_s']}-{stretch['to_s']} s {per_event['all']:,.1f}"
    if stretch["shards_x_load"] is not None:
        shown += (f" (shards {per_event['shards']:,.1f}, {stretch['shards_x_load']:.2f} x the "
                  "load generator)")
    return shown


def summary_lines(report: dict[str, Any], *, machine_loop_ms: float | None = None
                  ) -> list[str]:
    t, e, r, tr = (report["throughput"], report["errors"], report["resources"],
                   report["treatments"])
    lines = [
        f"throughput: target {t['target_eps']:,.0f} ev/s, sent {t['sent_eps']:,.0f}, "
        f"accepted {t['accepted_eps']:,.0f} ({t['accepted']:,} events)",
        f"treatments: {tr['matched']:,} of {tr['triggers']:,} triggers matched, "
        f"{tr['missing']:,} missing; {tr['fired']:,} fired in all "
        f"({100 * tr['fired'] / max(t['accepted'], 1):.1f} per 100 accepted events)",
        f"errors: rejected {e['rejected']:,}, rpc errors {e['rpc_errors']:,}, "
        f"retries given up {e['gave_up']:,}, decide errors {sum(e['decide_errors'].values())}",
        f"ray processes: CPU {_ms(r['ray_cpu_pct_mean'])} % mean, {_ms(r['ray_cpu_pct_max'])}"
        f" % max (of one core); RSS {_ms(r['ray_rss_mb_max'])} MB max; driver process CPU "
        f"{_ms(r['driver_cpu_pct_mean'])} %; whole machine {_ms(r['machine_cpu_pct_mean'])} %"
        f" of one core, of {100 * r['cpu_count']} % on {r['cpu_count']} cores (load "
        f"generator included)",
    ]
    profiles = report.get("profiles") or {}
    if "saved" in profiles:
        lines.append(
            f"before the load: {profiles['customers']:,} profiles in {profiles['seconds']} s, "
            + (f"then a checkpoint saved {profiles['saved']:,} customers in "
               f"{profiles['checkpoint_s']} s" if profiles["saved"] is not None else
               "no checkpoint (the engine refused it): the run's snapshots save them"))
    stretches = accepted_by_stretch(report)
    if len(stretches) > 1:
        lines.append(f"accepted ev/s over the run, in {len(stretches)} equal stretches: "
                     + " ".join(f"{rate:,.0f}" for rate in stretches))
    per_event = r.get("cpu_us_per_event") or {}
    if per_event:
        roles = sorted((role for role in per_event if role != "all"),
                       key=lambda role: -per_event[role])
        lines.append("CPU per accepted event (µs): " + ", ".join(
            f"{role} {per_event[role]:,.1f}" for role in roles) + f"; all {per_event['all']:,.1f}")
    stretched = cpu_stretches(report)
    if len(stretched) > 1:
        lines.append("CPU per accepted event over the run (µs, all roles; the load generator "
                     "does the same work throughout, so shards against it move only with the "
                     "engine's work): " + "; ".join(_stretch_cpu(s) for s in stretched))
    waits = r.get("cpu_wait_per_cpu") or {}
    if waits:
        lines.append("Waiting for a CPU while runnable, per second of CPU: " + ", ".join(
            f"{role} {waits[role]:.2f}" for role in sorted(waits, key=lambda role: -waits[role])))
    for index, steps in enumerate(report.get("shard_steps", [])):
        lines.append(f"shard {index} loop steps, longest total first (count, p50 / p99 / max "
                     f"bucket in ms): " + "; ".join(
                         f"{name} {s['total_ms']:,.0f} ms ({s['count']:,}, {s['p50_ms']} / "
                         f"{s['p99_ms']} / {s['longest_ms']})"
                         for name, s in sorted(steps.items(), key=lambda kv: -kv[1]["total_ms"]))
                     + ("" if any(name.startswith("gc ") for name in steps)
                        else "; no collector pause"))
    direct = report.get("shard_events_direct") or []
    if any(direct):
        accepted = report["throughput"]["accepted"]
        lines.append(f"events straight from the clients to the shards (no router): "
                     f"{sum(direct):,} of {accepted:,} accepted ("
                     + ", ".join(f"shard {i} {n:,}" for i, n in enumerate(direct)) + ")")
    for index, snap in enumerate(report.get("shard_snapshots", [])):
        lines.append(f"shard {index} snapshots: {snap['snapshot_rows']:,} customers saved, "
                     f"{snap['catch_ups']:,} batches waited for a catch-up step (past "
                     f"max_replay_events); a restart would replay {snap['replay_backlog']:,} "
                     "events at the end")
    for index, writes in enumerate(report.get("shard_store_writes", [])):
        if writes:
            count = max(stage["count"] for stage in writes.values())
            lines.append(f"shard {index} store: {count:,} write transactions (total, p50 / p99 /"
                         " max bucket in ms): " + "; ".join(
                             f"{name} {s['total_ms']:,.0f} ms, {s['p50_ms']} / {s['p99_ms']} / "
                             f"{s['longest_ms']}" for name, s in writes.items()))
    for index, way_in in enumerate(report.get("shard_way_in", [])):
        for what, stages in (("batches'", WayIn.BATCH_STAGES), ("Decides'", WayIn.DECIDE_STAGES)):
            if any(name in way_in for name in stages):
                lines.append(f"shard {index} {what} way in (count, p50 / p99 / max bucket in "
                             "ms): " + "; ".join(
                                 f"{name.removeprefix(DECIDE)} {way_in[name]['count']:,}, "
                                 f"{way_in[name]['p50_ms']} / {way_in[name]['p99_ms']} / "
                                 f"{way_in[name]['longest_ms']}"
                                 for name in stages if name in way_in))
    if machine_loop_ms is not None:
        lines.append(describe(machine_loop_ms))
    if tr["missing"]:
        lines.append(f"missing treatments, first customers: {tr['missing_sample']}")
    if e["reasons"]:
        lines.append(f"error reasons: {e['reasons']}")
    if e["trigger_pool_exhausted"]:
        lines.append(f"[yellow]trigger pool exhausted {e['trigger_pool_exhausted']:,} times: "
                     f"raise --customers[/]")
    return lines


def plot_report(report: dict[str, Any], path: Path) -> None:
    """Latency percentiles over time and achieved vs target throughput (or per step)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    if report.get("mode") == "step":
        steps = report["steps"]
        rates = [s["throughput"]["target_eps"] for s in steps]
        for key, label in (("p50", "p50"), ("p95", "p95"), ("p99", "p99")):
            top.plot(rates, [s["latency_ms"]["submit_to_treatment"][key] for s in steps],
                     marker="o", label=label)
        top.axhline(report["p99_bound_ms"], color="red", linestyle="--", label="p99 bound")
        bottom.plot(rates, [s["throughput"]["accepted_eps"] for s in steps], marker="o",
                    label="accepted")
        bottom.plot(rates, rates, linestyle="--", color="grey", label="target")
        bottom.set_xlabel("target rate (events/s)")
    else:
        timeline = report["timeline"]
        seconds = [row["t_s"] for row in timeline]
        for key in ("e2e_p50_ms", "e2e_p95_ms", "e2e_p99_ms"):
            top.plot(seconds, [row[key] for row in timeline], label=key[4:7])
        bottom.plot(seconds, [row["accepted"] for row in timeline], label="accepted")
        bottom.plot(seconds, [row["sent"] for row in timeline], label="sent", alpha=0.6)
        bottom.axhline(report["throughput"]["target_eps"], color="grey", linestyle="--",
                       label="target")
        bottom.set_xlabel("seconds since start (latency by scheduled send time, "
                          "throughput by send / reply time)")
    top.set_ylabel("submit → treatment (ms)")
    top.set_yscale("log")
    top.legend()
    top.grid(alpha=0.3)
    bottom.set_ylabel("events/s")
    bottom.legend()
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@click.command()
@click.option("--target", help="host:port of a running `shush run`")
@click.option("--embedded", is_flag=True,
              help="Start a local engine (Ray + gRPC) in a separate process for the test")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="Engine config: the embedded engine's, or where --target writes treatments")
@click.option("--channel", type=click.Path(dir_okay=False),
              help="Treatments JSONL file of the --target engine (default: from --config)")
@click.option("--rate", type=float, default=10_000, show_default=True,
              help="Target events/s over all client processes (open loop)")
@click.option("--duration", "duration_s", type=float, default=30, show_default=True,
              help="Seconds of load (per step in step mode: see --step-s)")
@click.option("--batch", "batch_size", type=int, default=250, show_default=True,
              help="Events per SubmitEvents call")
@click.option("--senders", type=int, default=8, show_default=True,
              help="asyncio sender tasks per process (batches in flight)")
@click.option("--processes", type=int, default=1, show_default=True,
              help="Client processes, each sending its share of the rate")
@click.option("--customers", type=int, default=20_000, show_default=True,
              help="Synthetic population (grown if the triggers need more)")
@click.option("--trigger-fraction", type=float, default=0.02, show_default=True,
              help="Share of events that are large withdrawals (one treatment each)")
@click.option("--decide-rate", "decide_rate_hz", type=float, default=20, show_default=True,
              help="Inbound Decide calls per second (0: none)")
@click.option("--drain-s", type=float, default=10, show_default=True,
              help="Longest wait for outstanding treatments after the load stops")
@click.option("--edge", type=click.Choice(["grpc", "frames", "frames-routed"]),
              default="grpc", show_default=True,
              help="Submits and Decides over gRPC, or over the frames edge (the embedded "
              "engine serves it; with --target give --frames-target): straight to their "
              "shards, or with frames-routed through the routers")
@click.option("--frames-target", help="host:port of the --target engine's frames edge")
@click.option("--shards", type=int, help="Shard actors of the embedded engine")
@click.option("--routers", type=int, help="Router actors of the embedded engine")
@click.option("--num-cpus", type=int, help="CPUs of the embedded Ray")
@click.option("--store-url", help="Store of the embedded engine (default: SQLite)")
@click.option("--step-from", type=float, help="Step mode: first rate (events/s)")
@click.option("--step-by", type=float, help="Step mode: rate added per step")
@click.option("--p99-bound-ms", type=float, default=20, show_default=True,
              help="Step mode: stop when p99 submit→treatment exceeds this")
@click.option("--step-s", type=float, default=15, show_default=True,
              help="Step mode: seconds per step")
@click.option("--max-steps", type=int, default=10, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="Write the full report here")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False),
              help="Write a PNG: latency over time and achieved vs target throughput")
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--quiet", is_flag=True, help="No live view")
@click.option("--keep-data", is_flag=True,
              help="Keep the embedded engine's data directory (store, treatments) after the run")
def loadtest(target: str | None, embedded: bool, config_path: str | None, channel: str | None,
             rate: float, duration_s: float, batch_size: int, senders: int, processes: int,
             customers: int, trigger_fraction: float, decide_rate_hz: float, drain_s: float,
             edge: str, frames_target: str | None, shards: int | None, routers: int | None,
             num_cpus: int | None,
             store_url: str | None, step_from: float | None, step_by: float | None,
             p99_bound_ms: float, step_s: float, max_steps: int, json_path: str | None,
             plot_path: str | None, seed: int, quiet: bool, keep_data: bool) -> None:
    """Drive an engine at an open-loop target rate through the real gRPC client.

    Events leave on a fixed schedule whatever the replies, so latency includes queueing.
    A share of events (--trigger-fraction) are large savings withdrawals on fresh customers;
    each fires one treatment, and submit → treatment is its decided_at_ms minus the event's
    scheduled send time (the JSONL channel is tailed). Also measured: accepted events/s,
    submit → ack, inbound Decide, errors, CPU and RSS of the Ray processes.

    \b
    shush loadtest --embedded --rate 10000 --duration 30 --json r.json --plot r.png
    shush loadtest --target 127.0.0.1:50051 --channel .shush/treatments.jsonl --rate 5000
    shush loadtest --embedded --step-from 5000 --step-by 5000 --p99-bound-ms 20 --step-s 15
    """
    try:
        from . import loadtest as lt
        from .loadtest_measure import local_postgres_pids
    except ImportError as exc:  # the dev extras
        raise click.ClickException(f"{exc}: install the dev extras (pip install -e '.[dev]')"
                                   ) from exc
    if bool(target) == embedded:
        raise click.UsageError("give exactly one of --target HOST:PORT or --embedded")
    if edge.startswith("frames") and target and not frames_target:
        raise click.UsageError("--edge frames with --target needs --frames-target HOST:PORT")
    if (step_from is None) != (step_by is None):
        raise click.UsageError("step mode needs both --step-from and --step-by")
    step_mode = step_from is not None
    common: dict[str, Any] = {
        "rate_eps": step_from if step_mode else rate,
        "duration_s": step_s if step_mode else duration_s, "batch_size": batch_size,
        "senders": senders, "processes": processes, "customers": customers,
        "trigger_fraction": trigger_fraction, "decide_rate_hz": decide_rate_hz,
        "drain_s": drain_s, "seed": seed}

    loop_ms = python_loop_ms()  # before the engine starts: the machine as the run found it
    live = None if quiet else Live(console=console, refresh_per_second=2, transient=True)

    def on_progress(progress: Any) -> None:
        if live is not None:
            live.update(progress_table(progress))

    progress = None if quiet else on_progress  # quiet: no live figures computed at all

    def on_step(report: dict[str, Any]) -> None:
        s = report["latency_ms"]["submit_to_treatment"]
        console.print(f"step {report['throughput']['target_eps']:>9,.0f} ev/s: accepted "
                      f"{report['throughput']['accepted_eps']:>9,.0f} ev/s, p99 "
                      f"{_ms(s['p99'])} ms, missing {report['treatments']['missing']}")

    def drive(target_: str, frames_: str | None, channel_path: Path, extra_pids: list[int],
              store_pids: list[int]) -> dict[str, Any]:
        spec = lt.LoadSpec(target=target_, channel_path=channel_path,
                           frames_target=frames_ if edge.startswith("frames") else None,
                           direct_to_shards=edge != "frames-routed", **common)
        if step_mode:
            assert step_from is not None and step_by is not None
            return asyncio.run(lt.run_steps(
                spec, rate_from=step_from, rate_step=step_by, p99_bound_ms=p99_bound_ms,
                max_steps=max_steps, on_progress=progress, on_step=on_step,
                extra_pids=extra_pids, store_pids=store_pids))
        return asyncio.run(lt.run_load(spec, extra_pids=extra_pids, store_pids=store_pids,
                                       on_progress=progress))

    if live is not None:
        live.start()
    stack = ExitStack()
    try:
        if embedded:
            workdir = stack.enter_context(scratch_dir(keep=keep_data))
            overrides: dict[str, Any] = {
                "grpc": {"port": 0, "frames_port": 0 if edge.startswith("frames") else None},
                "data_dir": str(workdir),
                "channel": {"path": str(workdir / "treatments.jsonl")},
                "num_shards": shards, "num_routers": routers, "store_url": store_url}
            overrides = {k: v for k, v in overrides.items() if v is not None}
            console.print(f"starting an embedded engine (data in {workdir})…")
            with lt.EmbeddedEngine(config_path, num_cpus=num_cpus, **overrides) as engine:
                console.print(f"engine on {engine.target}; treatments in {engine.channel_path}")
                report = drive(engine.target, engine.frames_target, engine.channel_path,
                               [engine.pid], local_postgres_pids(store_url))
        else:
            assert target is not None
            channel_path = Path(channel) if channel else _channel_of(config_path)
            report = drive(target, frames_target, channel_path, [], [])
    finally:
        stack.close()
        if live is not None:
            live.stop()

    report["machine"] = {"python_loop_ms": loop_ms}
    if step_mode:
        sustainable = report["sustainable_eps"]
        console.print(f"[bold]sustainable throughput at p99 ≤ {p99_bound_ms:g} ms: "
                      f"{'none' if sustainable is None else f'{sustainable:,.0f} events/s'}[/]")
        last = report["steps"][-1]
    else:
        last = report
    console.print(final_table(last))
    for line in summary_lines(last, machine_loop_ms=loop_ms):
        console.print(line)
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=2))
        console.print(f"report: {json_path}")
    if plot_path:
        plot_report(report, Path(plot_path))
        console.print(f"plot: {plot_path}")


@contextmanager
def scratch_dir(*, keep: bool) -> Iterator[Path]:
    """The embedded engine's data directory, removed after the run unless ``keep``: a 30-s
    run at 10,000 events/s leaves ~650 MB, most of it SQLite's WAL."""
    path = Path(tempfile.mkdtemp(prefix="shush-loadtest-"))
    try:
        yield path
    finally:
        if keep:
            console.print(f"data kept in {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def _channel_of(config_path: str | None) -> Path:
    import os

    from .config_loader import load_config

    config = load_config(config_path, environ=dict(os.environ))
    return Path(config.channel.path).resolve()
