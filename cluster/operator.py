"""Operator calls made next to the engine, through the supervisor (feeds that run beside it,
e.g. ``shush weather`` joining the engine's Ray cluster); clients use the gRPC operator API."""

from __future__ import annotations

from typing import Any

from ..actors import ray_calls
from ..actors.supervisor import SUPERVISOR_NAME
from ..engine.errors import EngineUnavailable
from ..engine.runs import EmergencyRun


def find_supervisor(namespace: str) -> Any:
    supervisor = ray_calls.get_actor(SUPERVISOR_NAME, namespace)
    if supervisor is None:
        raise EngineUnavailable(f"no engine in Ray namespace {namespace!r}", what="supervisor")
    return supervisor


def start_run(supervisor: Any, run: EmergencyRun, timeout_s: float = 60.0) -> dict[str, Any]:
    progress: dict[str, Any] = ray_calls.call_blocking(
        supervisor, "start_run", run.model_dump_json(), timeout_s=timeout_s, what="start_run")
    return progress
