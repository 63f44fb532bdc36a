"""How calls meet a busy actor loop, without Ray: Ray hands an async actor each call from
another thread (``run_coroutine_threadsafe``), and an actor awaits its calls' replies."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from shush.actors import ray_calls
from shush.engine.errors import EngineUnavailable


def _order_of_steps_and_call(between_steps: Callable[[], Awaitable[None]]) -> list[str]:
    """Three steps of a task; a call lands, from another thread, during the first."""
    async def scenario() -> list[str]:
        loop = asyncio.get_running_loop()
        order: list[str] = []

        async def call() -> None:
            order.append("call")

        for step in range(3):
            order.append(f"step {step}")
            if step == 0:
                delivery = threading.Thread(
                    target=lambda: asyncio.run_coroutine_threadsafe(call(), loop))
                delivery.start()
                delivery.join()
            await between_steps()
        return order

    return asyncio.run(scenario())


def test_a_call_that_lands_during_a_step_starts_before_the_next_step() -> None:
    assert _order_of_steps_and_call(ray_calls.let_calls_in) == [
        "step 0", "call", "step 1", "step 2"]


def test_one_sleep_zero_would_let_the_next_step_go_first() -> None:
    assert _order_of_steps_and_call(lambda: asyncio.sleep(0)) == [
        "step 0", "step 1", "call", "step 2"]


class _Method:
    def __init__(self, reply: Awaitable[Any]) -> None:
        self.reply = reply

    def remote(self, *args: Any) -> Awaitable[Any]:
        return self.reply


class _Handle:
    def __init__(self, reply: Awaitable[Any]) -> None:
        self.health = _Method(reply)


def test_a_call_without_an_answer_in_time_is_unavailable_and_names_the_call() -> None:
    async def scenario() -> None:
        never: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        with pytest.raises(EngineUnavailable, match=r"no answer within 0\.05s") as caught:
            await ray_calls.call(_Handle(never), "health", timeout_s=0.05, what="shard-1.health")
        assert "shard-1.health" in str(caught.value)
        assert never.cancelled()  # nothing is left waiting for the late reply

    asyncio.run(scenario())


def test_a_reply_in_time_is_returned() -> None:
    async def scenario() -> None:
        ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        ready.set_result(7)
        assert await ray_calls.call(_Handle(ready), "health", timeout_s=1) == 7

    asyncio.run(scenario())
