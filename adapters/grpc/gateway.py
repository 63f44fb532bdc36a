"""What the gRPC server (and any other edge) calls: the engine's routers and supervisor.

It round-robins batches over the routers and turns router refusals into typed errors.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from ...actors import ray_calls
from ...engine import codec
from ...engine.arbitration import Verdict
from ...engine.config import EngineConfig
from ...engine.errors import BackpressureError, CodecError


class EngineGateway:
    def __init__(self, config: EngineConfig, supervisor: Any, routers: list[Any]) -> None:
        if not routers:
            raise ValueError("the engine has no routers")
        self.config = config
        self.supervisor = supervisor
        self.routers = routers
        self._next = itertools.cycle(range(len(routers)))

    def _router(self) -> Any:
        return self.routers[next(self._next)]

    async def submit(self, events: list[list[Any]]) -> list[list[Any]]:
        reply = await ray_calls.call(self._router(), "submit", codec.pack(codec.EVENTS, events),
                                     timeout_s=self.config.call_timeout_s * 2, what="router")
        envelope = codec.unpack_envelope(reply, codec.ACKS)
        meta = envelope.get("meta") or {}
        if "refused" in meta:
            if "retry_after_s" in meta:
                raise BackpressureError(meta["refused"], retry_after_s=meta["retry_after_s"])
            raise CodecError(meta["refused"])
        acks: list[list[Any]] = envelope["items"]
        return acks

    async def decide(self, customer_id: str, channel: str | None) -> tuple[Verdict, list[Any]]:
        reply = await ray_calls.call(self._router(), "decide", customer_id, channel,
                                     timeout_s=self.config.call_timeout_s, what="decide")
        envelope = codec.unpack_envelope(reply, codec.VERDICTS)
        verdict = codec.decode_verdicts(reply)[0]
        return verdict, list((envelope.get("meta") or {}).get("removed", []))

    async def explain(self, customer_id: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await ray_calls.call(
            self._router(), "explain", customer_id, timeout_s=self.config.call_timeout_s)
        return result

    async def set_lever(self, action_id: str, lever: float) -> dict[str, float]:
        result: dict[str, float] = await ray_calls.call(
            self.supervisor, "set_lever", action_id, lever,
            timeout_s=self.config.call_timeout_s, what="levers")
        return result

    async def levers(self) -> dict[str, float]:
        result: dict[str, float] = await ray_calls.call(
            self.supervisor, "levers", timeout_s=self.config.call_timeout_s, what="levers")
        return result

    async def health(self) -> dict[str, Any]:
        result: dict[str, Any] = await ray_calls.call(
            self.supervisor, "health", timeout_s=self.config.call_timeout_s, what="health")
        return result

    @staticmethod
    def to_json(data: Any) -> str:
        return json.dumps(data, default=str)
