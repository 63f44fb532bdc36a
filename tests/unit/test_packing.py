"""engine.packing: the same bytes as msgpack.packb, from Packers that are never shared."""

from __future__ import annotations

import threading
import time
from array import array
from typing import Any

import msgpack
import pytest

from shush.engine.detectors.float_buffer import packable
from shush.engine.packing import packb


def test_the_same_bytes_as_msgpack() -> None:
    data = {"s": "é", "b": b"\x00\xff", "n": [1, -2, 3.5, None, True], "m": {"k": [b""]}}
    assert packb(data) == msgpack.packb(data, use_bin_type=True)
    buffer = array("d", [1.0, 2.5])
    assert packb({"buf": buffer}, default=packable) == msgpack.packb(
        {"buf": buffer}, use_bin_type=True, default=packable)


def test_a_failed_pack_leaves_nothing_behind() -> None:
    with pytest.raises(TypeError):
        packb(["before", object()])
    with pytest.raises(TypeError, match="not snapshot data"):
        packb(["before", {1, 2}], default=packable)
    assert packb(["after"]) == msgpack.packb(["after"], use_bin_type=True)
    assert packb(["after"], default=packable) == msgpack.packb(["after"], use_bin_type=True)


def test_threads_never_share_a_packer() -> None:
    """A ``default`` hook that sleeps lets other threads run in the middle of a pack: with one
    Packer for all, their bytes would interleave."""

    class Pair:
        def __init__(self, *items: int) -> None:
            self.items = list(items)

    def slow(value: Any) -> Any:
        time.sleep(0.001)
        return value.items

    results: dict[int, list[bytes]] = {}

    def work(n: int) -> None:
        results[n] = [packb([n, Pair(n, i), "x" * n], default=slow) for i in range(20)]

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for n, packed in results.items():
        assert packed == [msgpack.packb([n, [n, i], "x" * n]) for i in range(20)]
