"""``shush.client``: the public Python client for submitting events and asking for decisions."""

from .adapters.client import (
    AsyncShushClient,
    DecideResult,
    OutcomeRejection,
    OutcomeResult,
    RankedAction,
    Rejection,
    ShushClient,
    SubmitResult,
    new_event_id,
)

__all__ = [
    "AsyncShushClient",
    "DecideResult",
    "OutcomeRejection",
    "OutcomeResult",
    "RankedAction",
    "Rejection",
    "ShushClient",
    "SubmitResult",
    "new_event_id",
]
