"""Engines on loopback gRPC, on the session's one local Ray (``tests/conftest.py``)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from shush.adapters.channels.jsonl import read_jsonl
from shush.adapters.client import ShushClient
from shush.adapters.stores import make_store
from shush.cluster.config_loader import load_config
from shush.cluster.engine import Engine
from tests.factories import write_catalog


class RunningEngine:
    def __init__(self, engine: Engine, data_dir: Path) -> None:
        self.engine = engine
        self.data_dir = data_dir
        self.client = ShushClient(engine.target, timeout_s=30)

    @property
    def treatments_path(self) -> Path:
        return Path(self.engine.config.channel.path)

    def treatments(self) -> list[dict[str, Any]]:
        return read_jsonl(self.treatments_path)

    def dead_letters(self) -> list[dict[str, Any]]:
        store = make_store(self.engine.config.resolved_store_url)
        try:
            return [msgpack.unpackb(row.payload) for row in store.read_dead_letters(1000)]
        finally:
            store.close()

    def wait_for(self, predicate: Callable[[list[dict[str, Any]]], bool],
                 timeout_s: float = 15.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while True:
            treatments = self.treatments()
            if predicate(treatments) or time.monotonic() > deadline:
                return treatments
            time.sleep(0.02)

    def for_customer(self, customer: str, timeout_s: float = 15.0) -> list[dict[str, Any]]:
        treatments = self.wait_for(lambda ts: any(t["customer_id"] == customer for t in ts),
                                   timeout_s)
        return [t for t in treatments if t["customer_id"] == customer]


def start_engine(directory: Path, **overrides: Any) -> RunningEngine:
    """An engine with the test catalog, its own store and channel file under ``directory``
    (starting again on the same directory is a restart on the same store)."""
    directory.mkdir(parents=True, exist_ok=True)
    if "catalog_paths" not in overrides:
        overrides["catalog_paths"] = [str(write_catalog(directory))]
    overrides.setdefault("arbitration", {"explore": False})  # P = the posterior mean
    # free ports for gRPC and the frames edge; e.g. security settings from the caller
    overrides["grpc"] = {"port": 0, "frames_port": 0, **overrides.get("grpc", {})}
    config = load_config(
        namespace=f"t-{uuid.uuid4().hex[:8]}",
        data_dir=str(directory / "data"), channel={"path": str(directory / "treatments.jsonl")},
        health_interval_s=0.5, **overrides)
    engine = Engine.start(config)
    engine.serve_grpc()
    return RunningEngine(engine, directory)


@pytest.fixture(scope="module")
def running(ray_session: None, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[RunningEngine]:
    running = start_engine(tmp_path_factory.mktemp("engine"))
    yield running
    running.client.close()
    running.engine.stop()
