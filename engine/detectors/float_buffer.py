"""A detector's numeric history as ``array('d')``, not a list of floats.

A list holds a pointer to a boxed float per value (~32 bytes, scattered over the heap); an
array holds 8 bytes per value in one block, which a snapshot packs as one bytes value instead
of a value at a time. ``CustomerState.to_snapshot`` and ``pack_snapshot`` write arrays as
bytes; a buffer comes back as an array the first time its detector uses it, from bytes (a
snapshot) or from a list (state written before buffers were arrays).
"""

from __future__ import annotations

from array import array
from typing import Any


def float_buffer(state: dict[str, Any], key: str) -> array[float]:
    """``state[key]`` as an array of floats (made empty if absent), kept in ``state``."""
    held = state.get(key)
    if type(held) is array:
        return held
    buffer = array("d")
    if isinstance(held, bytes | bytearray):
        buffer.frombytes(held)
    elif held is not None:
        buffer.extend(held)
    state[key] = buffer
    return buffer


def plain(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` with its arrays as bytes (msgpack-ready); ``state`` itself if it has none."""
    if not any(type(value) is array for value in state.values()):
        return state
    return {key: value.tobytes() if type(value) is array else value
            for key, value in state.items()}


def packable(value: Any) -> bytes:
    """msgpack's ``default`` for snapshots: a float buffer as bytes."""
    if type(value) is array:
        return value.tobytes()
    raise TypeError(f"{type(value).__name__} is not snapshot data")
