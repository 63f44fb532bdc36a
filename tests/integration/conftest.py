"""Engines on loopback gRPC, on the session's one local Ray (``tests/conftest.py``)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shush.adapters.channels.jsonl import read_jsonl
from shush.adapters.client import ShushClient
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
        return read_jsonl(self.engine.config.dead_letter_path)

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


def start_engine(tmp_path: Path, **overrides: Any) -> RunningEngine:
    catalog = write_catalog(tmp_path)
    config = load_config(
        namespace=f"t-{uuid.uuid4().hex[:8]}", catalog_paths=[str(catalog)],
        data_dir=str(tmp_path / "data"), channel={"path": str(tmp_path / "treatments.jsonl")},
        grpc={"port": 0}, health_interval_s=0.5, **overrides)
    engine = Engine.start(config)
    engine.serve_grpc()
    return RunningEngine(engine, tmp_path)


@pytest.fixture(scope="module")
def running(ray_session: None, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[RunningEngine]:
    running = start_engine(tmp_path_factory.mktemp("engine"))
    yield running
    running.client.close()
    running.engine.stop()
