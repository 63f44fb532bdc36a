"""A JSONL file: one line per treatment (the default channel) or per dead-letter record.

Each record is written with a single ``write`` on a file opened in append mode and flushed at
once, so several shard processes can share one file without interleaving lines.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection
from pathlib import Path
from typing import Any

import pydantic_core

from ...engine.models import Treatment


class JsonlSink:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, record: dict[str, Any]) -> None:
        os.write(self._fd, pydantic_core.to_json(record, fallback=str) + b"\n")  # 3x json.dumps

    def close(self) -> None:
        os.close(self._fd)


# How far back ``JsonlChannel.delivered`` looks: a resend follows its send by a shard's restart
# (seconds), and the file takes ~4 MB a second at 10,000 treatments a second
DELIVERED_TAIL_BYTES = 64 << 20


class JsonlChannel(JsonlSink):
    """Records each treatment as it fires."""

    def send(self, treatment: Treatment) -> None:
        self.write(treatment.to_wire())

    def delivered(self, keys: Collection[str]) -> set[str]:
        """The keys among ``keys`` in the last ``DELIVERED_TAIL_BYTES`` of the file (every
        shard's lines: they share it), found as their bytes, without decoding a line."""
        with self.path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - DELIVERED_TAIL_BYTES))
            tail = handle.read()
        return {key for key in keys
                if b'"idempotency_key":' + pydantic_core.to_json(key) in tail}


def read_jsonl(path: Path | str) -> list[dict[str, Any]]:
    """The file's complete lines: a last line without its newline is still being written by
    another process (a reader tailing a live channel must not fail on it)."""
    path = Path(path)
    if not path.exists():
        return []
    *complete, _partial = path.read_bytes().split(b"\n")
    return [json.loads(line) for line in complete if line.strip()]
