"""Shush: an always-on, event-based marketing and service engine on Ray.

Import root for the packages ``engine``, ``policies``, ``actors``, ``adapters`` and ``cluster``.
"""

__version__ = "0.1.0"
