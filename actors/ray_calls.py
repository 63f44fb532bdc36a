"""Every Ray call of Shush goes through here: creating, calling, finding and killing actors.

Keeping them in one place makes control logic testable with fakes, and gives every remote wait
the same timeout and error translation: a dead or silent actor becomes ``EngineUnavailable``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from ..engine.errors import EngineUnavailable, ShushError

ActorHandle = Any  # ray.actor.ActorHandle; kept loose so fakes fit


def create(actor_class: Any, *args: Any, name: str | None = None, namespace: str | None = None,
           num_cpus: float = 0.0, max_restarts: int = 0, max_concurrency: int | None = None,
           detached: bool = False, **kwargs: Any) -> ActorHandle:
    """Create (or re-attach to, when named) an actor."""
    options: dict[str, Any] = {"num_cpus": num_cpus, "max_restarts": max_restarts}
    if name is not None:
        options.update(name=name, namespace=namespace, get_if_exists=True)
    if max_concurrency is not None:
        options["max_concurrency"] = max_concurrency
    if detached:
        options["lifetime"] = "detached"
    return actor_class.options(**options).remote(*args, **kwargs)


async def let_calls_in() -> None:
    """Let the calls that reached this async actor during the last step start before the next
    step. Ray hands a call to the actor's loop with ``run_coroutine_threadsafe``: one loop
    turn creates the call's task and a second runs its first step, so one ``sleep(0)`` would
    let the caller's next step go first and the call wait a step more."""
    await asyncio.sleep(0)
    await asyncio.sleep(0)


def _shush_cause(exc: RayTaskError) -> BaseException:
    """A ShushError raised inside an actor reaches the caller as itself."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, ShushError) else exc


@contextmanager
def _translated(method: str, timeout_s: float, what: str) -> Iterator[None]:
    """Ray's failures as Shush errors: a dead or silent actor is ``EngineUnavailable``, and a
    ShushError raised inside the actor reaches the caller as itself."""
    try:
        yield
    except RayTaskError as exc:
        raise _shush_cause(exc) from exc
    except (RayActorError, ray.exceptions.ActorUnavailableError) as exc:
        raise EngineUnavailable(f"actor unavailable ({type(exc).__name__})",
                                what=what or method) from exc
    except (TimeoutError, GetTimeoutError) as exc:
        raise EngineUnavailable(f"no answer within {timeout_s}s", what=what or method) from exc


async def call(handle: ActorHandle, method: str, *args: Any, timeout_s: float,
               what: str = "") -> Any:
    """Await one actor method with a deadline. ``asyncio.timeout``, not ``wait_for``: the
    reply then resumes the caller two loop turns after it lands instead of four (``wait_for``
    wraps the call in a task of its own and wakes the caller through a waiter), and each turn
    of a busy loop can be a step of someone else's work (benchmarks/bench_gil_handoff.py)."""
    with _translated(method, timeout_s, what):
        async with asyncio.timeout(timeout_s):
            return await getattr(handle, method).remote(*args)


Liveness = Literal["alive", "restarting", "dead"]


async def probe(handle: ActorHandle, method: str, *, timeout_s: float
                ) -> tuple[Liveness, Any]:
    """How an actor answers a cheap call, and its reply (``None`` unless it replied):
    ``alive``; ``restarting`` when Ray is restarting it (its constructor may take seconds:
    reloading snapshots, replaying the journal) or it did not answer in time; ``dead`` when
    Ray will not restart it."""
    try:
        async with asyncio.timeout(timeout_s):
            return "alive", await getattr(handle, method).remote()
    except (ray.exceptions.ActorUnavailableError, TimeoutError, GetTimeoutError):
        return "restarting", None
    except RayActorError:  # ActorDiedError: killed for good, or out of restarts
        return "dead", None
    except RayTaskError:  # the method failed, but the actor answered
        return "alive", None


def call_blocking(handle: ActorHandle, method: str, *args: Any, timeout_s: float,
                  what: str = "") -> Any:
    """For drivers only (never inside an actor): wait for one actor method."""
    with _translated(method, timeout_s, what):
        return ray.get(getattr(handle, method).remote(*args), timeout=timeout_s)


def node_id() -> str:
    """The id of the Ray node this process runs on."""
    return str(ray.get_runtime_context().get_node_id())


def get_actor(name: str, namespace: str) -> ActorHandle | None:
    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError:
        return None


def kill(handle: ActorHandle, *, no_restart: bool = True) -> None:
    try:
        ray.kill(handle, no_restart=no_restart)
    except (RayActorError, ValueError):
        pass


def actor_name(kind: str, index: int) -> str:
    """The name of the engine's ``index``-th actor of a kind ("shard", "router", ...)."""
    return f"{kind}-{index}"


class ActorDirectory:
    """Handles of named actors, looked up on first use and again after a failure.

    Actors find their peers by name instead of receiving handles as constructor arguments: a
    restarted (or re-created) peer keeps its name, and Ray can always re-run a constructor whose
    arguments are plain values (see ray-project/ray#53727).
    """

    def __init__(self, kind: str, count: int, namespace: str) -> None:
        self.names = [actor_name(kind, i) for i in range(count)]
        self.namespace = namespace
        self._handles: list[ActorHandle | None] = [None] * count

    def __len__(self) -> int:
        return len(self.names)

    def get(self, index: int) -> ActorHandle:
        handle = self._handles[index]
        if handle is None:
            handle = get_actor(self.names[index], self.namespace)
            if handle is None:
                raise EngineUnavailable("no such actor (yet)", what=self.names[index])
            self._handles[index] = handle
        return handle

    def forget(self, index: int) -> None:
        self._handles[index] = None

    async def call(self, index: int, method: str, *args: Any, timeout_s: float) -> Any:
        """Call the ``index``-th actor; on failure, look it up afresh next time."""
        try:
            return await call(self.get(index), method, *args, timeout_s=timeout_s,
                              what=f"{self.names[index]}.{method}")
        except EngineUnavailable:
            self.forget(index)
            raise
