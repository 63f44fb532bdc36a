"""Load the one ``EngineConfig``: a YAML file, then ``SHUSH_*`` environment overrides.

Nested fields use a double underscore: ``SHUSH_GRPC__PORT=50052``, ``SHUSH_NUM_SHARDS=4``.
This is the only place that reads the environment, and only when called.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..engine.catalog import Catalog, bundled_catalog_path, load_catalog
from ..engine.config import EngineConfig
from ..engine.errors import ConfigError
from ..policies.candidates import EligibilityPolicy
from ..policies.policy_config import catalog_policies

ENV_PREFIX = "SHUSH_"


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        path = key[len(ENV_PREFIX):].lower().split("__")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = overrides
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return overrides


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def load_config(path: Path | str | None = None, *, environ: Mapping[str, str] | None = None,
                **overrides: Any) -> EngineConfig:
    """YAML file (optional) < environment < keyword overrides; errors name the field."""
    data: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        source = str(path)
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read: {exc}", source=source) from exc
        if not isinstance(loaded, dict):
            raise ConfigError("the configuration must be a mapping", source=source)
        data = loaded
    if environ is not None:
        _merge(data, _env_overrides(environ))
    _merge(data, overrides)
    try:
        return EngineConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(first["msg"], source=source,
                          field=".".join(str(p) for p in first["loc"])) from exc


def load_engine_catalog(config: EngineConfig) -> Catalog:
    """The configured catalogs (or the bundled bank one), with every policy compiled."""
    catalog = load_catalog(list(config.catalog_paths) or [bundled_catalog_path("bank")])
    EligibilityPolicy(catalog)  # fail at load, naming the file, item and field
    catalog_policies(catalog)
    return catalog
