"""The ``shush`` command line."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from ..engine.errors import ShushError

console = Console()


def _config(config_path: str | None, **overrides: Any) -> Any:
    import os

    from .config_loader import load_config

    return load_config(config_path, environ=dict(os.environ),
                       **{k: v for k, v in overrides.items() if v is not None})


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log at INFO level")
def main(verbose: bool) -> None:
    """Shush: an always-on, event-based marketing and service engine on Ray."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _start(config: Any, address: str | None, num_cpus: int | None) -> Any:
    from .engine import Engine
    from .ray_runtime import start_ray

    start_ray(address, num_cpus=num_cpus, namespace=config.namespace)
    return Engine.start(config)


@main.command()
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False))
@click.option("--address", help="Join this Ray cluster instead of starting one")
@click.option("--port", type=int, help="gRPC port (0: any free port)")
@click.option("--num-cpus", type=int, help="CPUs of the embedded Ray")
def run(config_path: str | None, address: str | None, port: int | None,
        num_cpus: int | None) -> None:
    """Run the engine and its gRPC server until Ctrl-C."""
    config = _config(config_path)
    if port is not None:
        config = config.model_copy(update={"grpc": config.grpc.model_copy(update={"port": port})})
    from ..adapters.grpc.server import exposure_warnings

    for warning in exposure_warnings(config.grpc):
        console.print(f"[bold red]WARNING:[/] {warning}")
    engine = _start(config, address, num_cpus)
    engine.serve_grpc()
    frames = f", frames on {engine.frames_target}" if engine.frames_target else ""
    console.print(f"Shush serving gRPC on {engine.target}{frames}; treatments go to "
                  f"{config.channel.path}. Ctrl-C stops.")
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        while not stopped.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    console.print("stopping…")
    engine.stop()
    from .ray_runtime import stop_ray

    stop_ray()


@main.command()
@click.option("--events", "synthetic_events", default=20_000, show_default=True,
              help="Synthetic events played after the scenario")
def demo(synthetic_events: int) -> None:
    """Start everything embedded and play a small bank scenario through the real path."""
    from .demo import run_demo
    from .ray_runtime import stop_ray

    data_dir = Path(".shush/demo")
    channel = data_dir / "treatments.jsonl"
    channel.unlink(missing_ok=True)
    # Posterior means instead of Thompson draws, so that the story plays the same every time.
    config = _config(None, data_dir=str(data_dir), channel={"path": str(channel)},
                     grpc={"port": 0}, arbitration={"explore": False})
    (data_dir / "shush.db").unlink(missing_ok=True)
    started = time.perf_counter()
    console.print("[bold]Starting Shush (local Ray: routers, shards, arbitration)…[/]")
    engine = _start(config, None, None)
    engine.serve_grpc()
    console.print(f"ready in {time.perf_counter() - started:.1f} s; gRPC on {engine.target}\n")
    try:
        run_demo(engine.target, channel, console, synthetic_events=synthetic_events,
                 supervisor=engine.supervisor)
    finally:
        engine.stop()
        stop_ray()


def _client_options(func: Any) -> Any:
    """--target, --api-key (or SHUSH_API_KEY) and --root-cert for the client commands."""
    func = click.option("--root-cert", type=click.Path(exists=True, dir_okay=False),
                        help="Use TLS, trusting this CA certificate (PEM)")(func)
    func = click.option("--api-key", envvar="SHUSH_API_KEY",
                        help="API key sent as a bearer token (env SHUSH_API_KEY)")(func)
    return click.option("--target", default="127.0.0.1:50051", show_default=True)(func)


def _client(target: str, api_key: str | None, root_cert: str | None) -> Any:
    from ..adapters.client import ShushClient

    return ShushClient(target, api_key=api_key, root_certificates=root_cert)


@main.command("hash-key")
@click.argument("key")
def hash_key_command(key: str) -> None:
    """Print the SHA-256 to put in grpc.security.api_keys for KEY (the key stays secret)."""
    from ..adapters.grpc.auth import hash_key

    console.print(hash_key(key))


def _parse_event(text: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(text)
    return event


@main.command()
@_client_options
@click.option("--file", "path", type=click.Path(exists=True, dir_okay=False),
              help="A JSONL file of events")
@click.option("--customer", help="customer_id of a single event")
@click.option("--type", "type_", help="Signal type of a single event")
@click.option("--attr", multiple=True, help="name=value (JSON value), repeatable")
def send(target: str, api_key: str | None, root_cert: str | None, path: str | None,
         customer: str | None, type_: str | None, attr: tuple[str, ...]) -> None:
    """Send one event from the command line, or every event of a JSONL file."""
    if path:
        lines = Path(path).read_text().splitlines()
        events = [_parse_event(line) for line in lines if line.strip()]
    elif customer and type_:
        attributes = {}
        for item in attr:
            name, _, raw = item.partition("=")
            try:
                attributes[name] = json.loads(raw)
            except json.JSONDecodeError:
                attributes[name] = raw
        events = [{"customer_id": customer, "type": type_, "source": "cli",
                   "attributes": attributes}]
    else:
        raise click.UsageError("give --file, or --customer and --type")
    with _client(target, api_key, root_cert) as client:
        result = client.submit(events)
    console.print(f"accepted {result.accepted}, duplicates {result.duplicates}, "
                  f"rejected {len(result.rejected)}")
    for rejection in result.rejected:
        console.print(f"  [red]✗ {rejection.event_id}[/] {rejection.field}: {rejection.reason}")
    if result.rejected:
        sys.exit(1)


@main.command()
@_client_options
@click.argument("assignments", nargs=-1)
def levers(target: str, api_key: str | None, root_cert: str | None,
           assignments: tuple[str, ...]) -> None:
    """Show levers, or set them: ``shush levers savings_rate_offer=2.5`` (operator key)."""
    with _client(target, api_key, root_cert) as client:
        current = client.levers()
        for assignment in assignments:
            action_id, _, value = assignment.partition("=")
            current = client.set_lever(action_id, float(value))
    for action_id, lever in sorted(current.items()):
        console.print(f"{action_id:32} {lever:g}")


@main.command()
@_client_options
def checkpoint(target: str, api_key: str | None, root_cert: str | None) -> None:
    """Snapshot every shard now, so that a restart replays nothing written before (operator
    key): before a planned restart, or after a bulk load."""
    started = time.perf_counter()
    with _client(target, api_key, root_cert) as client:
        saved = client.checkpoint()
    console.print(f"{saved:,} customers saved in {time.perf_counter() - started:.1f} s")


@main.command()
@_client_options
@click.argument("customer_id")
def explain(target: str, api_key: str | None, root_cert: str | None, customer_id: str) -> None:
    """Print the last decisions for a customer, with every factor and removal (operator)."""
    with _client(target, api_key, root_cert) as client:
        decisions = client.explain(customer_id)
    if not decisions:
        console.print(f"no decision recorded for {customer_id!r}")
    for decision in decisions:
        console.print(f"[bold]{decision['trigger']} decision, winner "
                      f"{decision['winner']}[/] at {decision['decided_at_ms']}")
        for reason in decision["reasons"]:
            console.print(f"  {reason}")


def _attach(address: str, namespace: str) -> Any:
    from .operator import find_supervisor
    from .ray_runtime import start_ray

    start_ray(address, namespace=namespace)
    return find_supervisor(namespace)


def _print_runs(runs: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(title="runs")
    for column in ("run", "state", "selected", "injected", "treated", "skipped", "errors"):
        table.add_column(column, justify="left" if column in ("run", "state") else "right")
    for r in runs:
        table.add_row(r["run_id"], str(r["state"]), *(f"{r[k]:,}" for k in (
            "selected", "injected", "treated", "skipped", "errors")))
    console.print(table)


@main.command()
@_client_options
@click.option("--zip", "zips", multiple=True, help="Zip code, repeatable")
@click.option("--region", "regions", multiple=True, help="Region, repeatable")
@click.option("--segment", "segments", multiple=True, help="Segment, repeatable")
@click.option("--product", "products", multiple=True, help="Holds any of these products")
@click.option("--where", default="", help="A policy expression over the profile")
@click.option("--moment", required=True, help="The moment injected, e.g. hurricane_warning")
@click.option("--urgency", default=1.0, show_default=True)
@click.option("--rate", default=0.0, help="Customers per second (default: the engine's)")
@click.option("--bypass-soft-caps", is_flag=True, help="Service/safety: skip soft caps")
@click.option("--dedup-key", default="", help="Runs sharing it treat a customer once")
def emergency(target: str, api_key: str | None, root_cert: str | None, zips: tuple[str, ...],
              regions: tuple[str, ...], segments: tuple[str, ...], products: tuple[str, ...],
              where: str, moment: str, urgency: float, rate: float, bypass_soft_caps: bool,
              dedup_key: str) -> None:
    """Inject a moment into every customer matching a profile filter (operator)."""
    with _client(target, api_key, root_cert) as client:
        progress = client.start_run(moment, zips=zips, regions=regions, segments=segments,
                                    products_any=products, where=where, urgency=urgency,
                                    rate_per_s=rate, bypass_soft_caps=bypass_soft_caps,
                                    dedup_key=dedup_key, purpose="shush emergency")
    _print_runs([progress])


@main.command()
@_client_options
def runs(target: str, api_key: str | None, root_cert: str | None) -> None:
    """Progress of the emergency runs (operator)."""
    with _client(target, api_key, root_cert) as client:
        _print_runs(client.runs())


@main.command()
@_client_options
def report(target: str, api_key: str | None, root_cert: str | None) -> None:
    """Treatments, outcomes and rates per action, with lift against the holdout (operator)."""
    from rich.table import Table

    with _client(target, api_key, root_cert) as client:
        rows = client.report()
    table = Table(title="treatments and outcomes per action")
    for column in ("action", "treated", "rate", "holdout", "holdout rate", "lift", "outcomes"):
        table.add_column(column, justify="left" if column in ("action", "outcomes") else "right")

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{x * 100:.1f}%"

    for row in rows:
        table.add_row(row["action_id"], f"{row['treated']:,}", pct(row["treated_rate"]),
                      f"{row['holdout']:,}", pct(row["holdout_rate"]), pct(row["lift"]),
                      ", ".join(f"{k} {n}" for k, n in sorted(row["outcomes"].items())))
    console.print(table)


@main.command()
@click.option("--address", default="auto", show_default=True)
@click.option("--namespace", default="shush", show_default=True)
@click.option("--now", help="ISO time the alerts are judged at (default: now)")
@click.argument("location")
def weather(address: str, namespace: str, now: str | None, location: str) -> None:
    """Read NWS alerts (file, directory or URL) and start a run per actionable incident."""
    from datetime import UTC, datetime

    from ..adapters.feeds.geo import ZipCountyIndex
    from .weather import WeatherFeed

    when = datetime.fromisoformat(now) if now else datetime.now(UTC)
    feed = WeatherFeed(ZipCountyIndex.from_csv())
    started, skipped, rejected = feed.poll(_attach(address, namespace), location, when)
    _print_runs(started)
    for alert in skipped:
        console.print(f"  skipped {alert.event} ({alert.alert_id}): {alert.reason}")
    for rejection in rejected:
        console.print(f"  [red]rejected[/] {rejection}")


@main.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--catalog", "catalogs", multiple=True, type=click.Path(exists=True),
              help="Catalog files (default: the bundled bank catalog)")
@click.option("--what-if", "what_if", multiple=True, type=click.Path(exists=True),
              help="Changed catalog files: replay again with them and compare, sending nothing")
@click.option("--speed", type=float, help="Event seconds per wall second (default: flat out)")
def replay(path: str, catalogs: tuple[str, ...], what_if: tuple[str, ...],
           speed: float | None) -> None:
    """Play an event log through an embedded engine whose clock follows event time."""
    from rich.table import Table

    from .ray_runtime import start_ray, stop_ray
    from .replay import compare_treatments, replay_in_engine

    start_ray(None)
    try:
        report, treatments = replay_in_engine(Path(path), catalogs, Path(".shush/replay"),
                                              speed=speed)
        changed = (replay_in_engine(Path(path), what_if, Path(".shush/replay-what-if"),
                                    speed=speed, namespace="shush-what-if")[1]
                   if what_if else None)
    finally:
        stop_ray()
    span_days = ((report.last_ms or 0) - (report.first_ms or 0)) / 86_400_000
    console.print(f"{report.events:,} events over {span_days:.1f} days of event time in "
                  f"{report.wall_s:.1f} s: accepted {report.accepted:,}, duplicates "
                  f"{report.duplicates:,}, rejected {len(report.rejected):,}; "
                  f"{len(treatments):,} treatments")
    for line in report.rejected[:20]:
        console.print(f"  [red]✗[/] {line}")
    if changed is None:
        return
    diff = compare_treatments(treatments, changed)
    table = Table(title="what-if: treatments per action")
    for column in ("action", "baseline", "what-if", "change"):
        table.add_column(column, justify="left" if column == "action" else "right")
    for action_id, before, after in diff.per_action:
        table.add_row(action_id, f"{before:,}", f"{after:,}", f"{after - before:+,}")
    console.print(table)
    console.print(f"{diff.customers_changed:,} of {diff.customers:,} customers would be "
                  "treated differently")


def _register_loadtest() -> None:
    from .loadtest_cli import loadtest  # click and rich only: cheap to import

    main.add_command(loadtest)


_register_loadtest()


def run_cli() -> None:
    try:
        main()
    except ShushError as exc:
        console.print(f"[red]error:[/] {exc}")
        sys.exit(2)
