"""State stores: SQLite (embedded default) and PostgreSQL.

``make_store(url)`` opens one from a URL:

- ``memory://`` — ``MemoryStateStore``, nothing survives the process (tests);
- ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` — ``SqliteStateStore``;
- ``postgresql://user@host:port/db?schema=name`` — ``PostgresStateStore`` (``schema`` defaults
  to ``shush``; the other query parameters go to libpq).
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ...engine.errors import ConfigError, FencedError, StoreError, StoreUnavailable, StoreUsageError
from ...engine.store import (
    DeadLetterRow,
    DecisionRow,
    JournalEntry,
    OutboxItem,
    OutboxStatus,
    SnapshotRow,
    StateStore,
    TimerKey,
    TimerRow,
    TreatmentRow,
)
from .memory import MemoryStateStore

__all__ = [
    "DeadLetterRow",
    "DecisionRow",
    "FencedError",
    "JournalEntry",
    "MemoryStateStore",
    "OutboxItem",
    "OutboxStatus",
    "SnapshotRow",
    "StateStore",
    "StoreError",
    "StoreUnavailable",
    "StoreUsageError",
    "TimerKey",
    "TimerRow",
    "TreatmentRow",
    "make_store",
]


def make_store(url: str) -> StateStore:
    """Open the store ``url`` names (see the module docstring for the forms)."""
    scheme = url.partition("://")[0].lower()
    if scheme == "memory":
        return MemoryStateStore()
    if scheme == "sqlite":
        from .sqlite import SqliteStateStore

        path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else ""
        if not path:
            raise ConfigError(f"a SQLite store URL looks like sqlite:///path.db, not {url!r}",
                              field="store_url")
        return SqliteStateStore(path)
    if scheme in ("postgresql", "postgres"):
        from .postgres import PostgresStateStore

        parts = urlsplit(url)
        query = parse_qsl(parts.query)
        schema = next((value for key, value in query if key == "schema"), "shush")
        rest = urlencode([(key, value) for key, value in query if key != "schema"])
        return PostgresStateStore(urlunsplit(parts._replace(query=rest)), schema=schema)
    raise ConfigError(f"unknown store URL scheme {scheme!r} (memory, sqlite, postgresql)",
                      field="store_url")
