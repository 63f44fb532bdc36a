"""Errors raised by the syndicated feeds (weather alerts).

    ShushError                      (shush.engine.errors)
    └── FeedError                   a feed could not be used as given (reason, source)
        ├── FeedUnavailable         the feed location could not be read (source)
        ├── AlertRejected           one alert refused (source, alert_id, field, index)
        └── FeedUsageError          a call the feed code cannot accept as made (field)

``AlertRejected`` is raised inside the parser for one alert and turned into an
``AlertRejection`` record of the ``ParseResult``: the other alerts of the document still parse.
``FeedUnavailable`` is the only error ``read_alerts`` raises for a location it cannot read; it
may succeed if retried. Bad zip-county tables raise ``CatalogError`` (shush.engine.errors).
"""

from __future__ import annotations

from ...engine.errors import ShushError


class FeedError(ShushError):
    """Root of the feed errors."""

    def __init__(self, reason: str, *, source: str = "") -> None:
        self.reason = reason
        self.source = source
        super().__init__(f"{source}: {reason}" if source else reason)


class FeedUnavailable(FeedError):
    """The file, directory or URL ``source`` could not be read (missing, HTTP error, timeout)."""


class AlertRejected(FeedError):
    """One alert of ``source`` refused: ``field`` (a ``WeatherAlert`` field) is missing or bad.

    ``alert_id`` is empty when the alert's id is unknown; ``index`` is the alert's position in
    its document (feature or entry number, from 0), or None for a whole-document failure.
    """

    def __init__(self, reason: str, *, source: str = "", alert_id: str = "", field: str = "",
                 index: int | None = None) -> None:
        self.alert_id = alert_id
        self.field = field
        self.index = index
        where = ", ".join(
            f"{k} {v!r}" for k, v in (("alert", alert_id), ("field", field), ("index", index))
            if v not in ("", None)
        )
        super().__init__(f"alert rejected ({where}): {reason}" if where else reason,
                         source=source)
        self.reason = reason


class FeedUsageError(FeedError):
    """A call the feed code cannot accept as made, e.g. a naive ``now`` datetime."""

    def __init__(self, reason: str, *, field: str = "") -> None:
        self.field = field
        super().__init__(f"{field}: {reason}" if field else reason)
        self.reason = reason
