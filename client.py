"""``shush.client``: the public Python client for submitting events and asking for decisions."""

from .adapters.client import (
    AsyncShushClient,
    DecideResult,
    RankedAction,
    Rejection,
    ShushClient,
    SubmitResult,
    new_event_id,
)

__all__ = [
    "AsyncShushClient",
    "DecideResult",
    "RankedAction",
    "Rejection",
    "ShushClient",
    "SubmitResult",
    "new_event_id",
]
