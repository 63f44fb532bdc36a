"""Unit tests run without Ray: any attempt to start it is a bug in the test or the code."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        import ray
    except ImportError:  # pragma: no cover
        return

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("unit tests must not start Ray; use tests/integration")

    monkeypatch.setattr(ray, "init", refuse)
