"""Starting or joining Ray: the only place ``ray.init`` is called."""

from __future__ import annotations

import logging
import os

import ray

log = logging.getLogger(__name__)


def start_ray(address: str | None = None, *, num_cpus: int | None = None,
              namespace: str = "shush") -> None:
    """Join ``address`` (a Ray cluster), or start an embedded local Ray without a dashboard."""
    if ray.is_initialized():
        return
    # Workers inherit the driver's environment: the uvloop policy is set in each process by
    # the gRPC server thread itself, and Ray's async actors keep their own loop.
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    if address:
        ray.init(address=address, namespace=namespace, log_to_driver=True)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, namespace=namespace,
                 log_to_driver=True, configure_logging=True, logging_level=logging.WARNING)
    log.info("Ray ready: %s", ray.cluster_resources())


def stop_ray() -> None:
    if ray.is_initialized():
        ray.shutdown()
