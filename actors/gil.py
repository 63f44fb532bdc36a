"""How soon Ray's threads get the GIL from a busy actor loop.

An async Ray actor runs Python on its event loop's thread, while Ray's own threads need the
GIL to hand the loop each incoming call and each reply to a call it made. While the loop
computes (a batch applied, a turn of decisions settled) such a thread waits for the
interpreter's switch interval before it may take the GIL, 5 ms by default, and one call or
reply takes the GIL several times. ``benchmarks/bench_gil_handoff.py`` keeps a loop busy with
2 ms steps and times calls in and replies back; docs/performance-history.md has its figures.
"""

from __future__ import annotations

import sys


def hand_over_every(interval_ms: float) -> None:
    """Let a thread waiting for the GIL have it after ``interval_ms`` of another's work."""
    sys.setswitchinterval(interval_ms / 1000)
