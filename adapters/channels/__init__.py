"""Channels: where treatments go (a JSONL file by default)."""
