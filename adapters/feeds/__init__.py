"""Feeds: syndicated sources such as weather alerts."""
