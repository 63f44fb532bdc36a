"""adapters/cluster -> actors -> policies -> engine, never backwards; the core does no I/O."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = {"engine": 0, "policies": 1, "actors": 2, "adapters": 3, "cluster": 3}
PURE_FORBIDDEN = {"ray", "grpc", "socket", "sqlite3", "psycopg", "urllib", "requests",
                  "subprocess", "threading", "os"}
# The core starts no thread, but its packers are per thread (``threading.local``), so that
# callers on several threads never share one
PURE_EXCEPTIONS = {("engine/packing.py", "threading")}


def _imports(path: Path) -> list[tuple[str, int]]:
    """(top-level shush package or external module, line) for each import in a file."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name.split(".")[0], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 0:
                parts = module.split(".")
                found.append((parts[1] if parts[0] == "shush" and len(parts) > 1 else parts[0],
                              node.lineno))
            else:  # resolve "from ..x import y" against the file's own folder
                folders = list(path.relative_to(ROOT).parts[:-1])
                base = folders[:len(folders) - (node.level - 1)]
                resolved = [*base, *module.split(".")] if module else base
                found.append((resolved[0] if resolved else "", node.lineno))
    return found


def _files(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "_pb2" not in p.name)


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_no_import_goes_backwards(package: str) -> None:
    for path in _files(package):
        for module, line in _imports(path):
            if module in LAYERS and module != package:
                assert LAYERS[module] < LAYERS[package] or (
                    LAYERS[module] == LAYERS[package] == 3 and package == "cluster"
                ), f"{path.relative_to(ROOT)}:{line} imports {module} ({package} may not)"


@pytest.mark.parametrize("package", ["engine", "policies"])
def test_pure_core_does_no_io(package: str) -> None:
    for path in _files(package):
        for module, line in _imports(path):
            if (str(path.relative_to(ROOT)), module) in PURE_EXCEPTIONS:
                continue
            assert module not in PURE_FORBIDDEN, (
                f"{path.relative_to(ROOT)}:{line} imports {module}: the pure core does no I/O")


def test_ray_init_only_in_cluster() -> None:
    for package in ("engine", "policies", "actors", "adapters"):
        for path in _files(package):
            assert "ray.init(" not in path.read_text(), f"{path} calls ray.init"


def test_remote_calls_only_through_the_wrapper() -> None:
    for path in _files("actors") + _files("adapters") + _files("cluster"):
        if path.name == "ray_calls.py":
            continue
        text = path.read_text()
        for needle in (r"(?<!ray)\.remote\(", r"ray\.get_actor", r"ray\.kill", r"ray\.get\("):
            assert not re.search(needle, text), f"{path.relative_to(ROOT)} uses {needle}"
