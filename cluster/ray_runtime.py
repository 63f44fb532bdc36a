"""Starting or joining Ray: the only place ``ray.init`` is called."""

from __future__ import annotations

import logging
import os

import ray

log = logging.getLogger(__name__)
WORKER_NICENESS = 0  # of the embedded Ray's workers (Ray's default: 15)


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
        # Ray starts workers at nice 15, below the gateway (the driver) and any client on the
        # machine: on a shared 2-core machine a shard then waited behind them, and a 9 ms
        # snapshot step took up to 330 ms. The shards are the engine's critical path, so the
        # embedded Ray runs them at the driver's priority (loadtest at 3,000 events/s, two
        # runs each: submit -> treatment p99 78-79 ms against 99-166 at nice 15). The price:
        # a closed-loop client in the driver's process is no longer served first, and
        # bench_suite's end-to-end rate fell from 15,600-16,500 to 12,000-13,300 events/s.
        ray.init(num_cpus=num_cpus, include_dashboard=False, namespace=namespace,
                 log_to_driver=True, configure_logging=True, logging_level=logging.WARNING,
                 _system_config={"worker_niceness": WORKER_NICENESS})
    log.info("Ray ready: %s", ray.cluster_resources())


def stop_ray() -> None:
    if ray.is_initialized():
        ray.shutdown()
