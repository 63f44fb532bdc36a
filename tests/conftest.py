"""Shared by every test folder: the one local Ray of a test session (2 CPUs, no dashboard)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    from shush.cluster.ray_runtime import start_ray, stop_ray

    start_ray(num_cpus=2, namespace="shush-tests")
    yield
    stop_ray()
