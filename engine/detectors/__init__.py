"""Detectors: declarative specs (a pydantic union on ``kind``) that turn signals into moments.

Each spec is also its own runtime: ``detect(state, signal)`` reads and updates a small
per-customer state (plain data, so it snapshots as msgpack) and returns a moment or ``None``.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from .base import BaseDetector
from .threshold import ThresholdDetector

DetectorSpec = Annotated[ThresholdDetector, Field(discriminator="kind")]

__all__ = ["BaseDetector", "DetectorSpec", "ThresholdDetector"]
