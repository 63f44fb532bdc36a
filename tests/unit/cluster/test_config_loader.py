from __future__ import annotations

from pathlib import Path

import pytest

from shush.cluster.config_loader import load_config
from shush.engine.errors import ConfigError


def test_defaults_yaml_environment_and_overrides_in_that_order(tmp_path: Path) -> None:
    path = tmp_path / "engine.yaml"
    path.write_text("num_shards: 3\ngrpc:\n  port: 6000\nrouter:\n  max_batch_events: 10\n")
    config = load_config(path, environ={"SHUSH_GRPC__PORT": "6001", "SHUSH_NUM_ROUTERS": "2",
                                        "HOME": "/root"}, num_shards=4)
    assert (config.num_shards, config.num_routers, config.grpc.port) == (4, 2, 6001)
    assert config.router.max_batch_events == 10
    assert config.grpc.host == "127.0.0.1"


@pytest.mark.parametrize(("environ", "field"), [
    ({"SHUSH_NUM_SHARDS": "0"}, "num_shards"),
    ({"SHUSH_GRPC__PORT": "99999"}, "grpc.port"),
    ({"SHUSH_ROUTER__FLUSH_INTERVAL_MS": "soon"}, "router.flush_interval_ms"),
    ({"SHUSH_SHARDZ": "1"}, "shardz"),
])
def test_invalid_values_name_the_field(environ: dict[str, str], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(environ=environ)
    assert info.value.field == field


def test_config_is_frozen() -> None:
    config = load_config()
    with pytest.raises(Exception, match="frozen"):
        config.num_shards = 9  # type: ignore[misc]


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")
