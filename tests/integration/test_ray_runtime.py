"""The embedded Ray: its workers (shards, routers, arbitrators) run at the driver's priority."""

from __future__ import annotations

import os

import pytest
import ray

from shush.cluster.ray_runtime import WORKER_NICENESS


@ray.remote(num_cpus=0)
def _niceness() -> int:
    return os.nice(0)


@pytest.mark.usefixtures("ray_session")
def test_workers_run_at_the_configured_niceness_not_rays_default_of_15() -> None:
    assert ray.get(_niceness.remote(), timeout=60) == WORKER_NICENESS == 0
