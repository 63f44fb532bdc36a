"""State stores: SQLite (embedded default) and PostgreSQL."""
