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
    console.print(f"Shush serving gRPC on {engine.target}; treatments go to "
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
    config = _config(None, data_dir=str(data_dir), channel={"path": str(channel)},
                     grpc={"port": 0})
    started = time.perf_counter()
    console.print("[bold]Starting Shush (local Ray: routers, shards, arbitration)…[/]")
    engine = _start(config, None, None)
    engine.serve_grpc()
    console.print(f"ready in {time.perf_counter() - started:.1f} s; gRPC on {engine.target}\n")
    try:
        run_demo(engine.target, channel, console, synthetic_events=synthetic_events)
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


def run_cli() -> None:
    try:
        main()
    except ShushError as exc:
        console.print(f"[red]error:[/] {exc}")
        sys.exit(2)
