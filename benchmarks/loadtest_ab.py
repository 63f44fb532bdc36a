"""An A/B of ``shush loadtest``: alternating runs of two versions on the same machine.

    .venv/bin/python benchmarks/loadtest_ab.py --base HEAD~1 --pairs 3 -- \\
        --rate 60000 --batch 1000 --duration 30 --decide-rate 100
    .venv/bin/python benchmarks/loadtest_ab.py --b-env SHUSH_SHARD__MAX_REPLAY_EVENTS=300000 \\
        --pairs 3 -- --rate 10000

A is the code at ``--base`` (a git ref; default: this checkout) with the ``--a-env``
settings, B this checkout with the ``--b-env`` ones (``SHUSH_...`` variables override the
engine's config). A's code runs from a detached git worktree, first on ``PYTHONPATH`` as the
``shush`` package; the embedded engine's Ray workers inherit it. Each run is ``shush loadtest
--embedded --quiet --json`` with the arguments after ``--``; runs go A, B, A, B..., so a
machine that speeds up or slows down during the A/B moves both sides. Prints each run as it
ends, then the comparison (``cluster/loadtest_compare.py``: means, the change, and each role's
CPU per event as a multiple of the load generator's, which follows the machine's speed).

Leave the checkout alone while it runs: B's Ray workers import it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from shush.cluster.loadtest_compare import compare, format_rows

REPO = Path(__file__).resolve().parent.parent

LOADTEST = "from shush.cluster.cli import run_cli; run_cli()"


def settings(pairs: list[str], flag: str) -> dict[str, str]:
    """``NAME=value`` pairs as an environment; a pair without ``=`` is refused by name."""
    env = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            sys.exit(f"{flag} {pair!r}: expected NAME=value")
        env[name] = value
    return env


def worktree(ref: str, into: Path) -> Path:
    """A detached worktree of ``ref`` under ``into``; returns the directory to put on
    ``PYTHONPATH`` (it holds the worktree as ``shush``)."""
    tree = into / "tree"  # (``main`` removes it)
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "--quiet",
                    str(tree), ref], check=True)
    package_parent = into / "pkg"
    package_parent.mkdir()
    (package_parent / "shush").symlink_to(tree, target_is_directory=True)
    return package_parent


def code_of(env: dict[str, str]) -> str:
    """Where ``shush`` is imported from under ``env``."""
    return subprocess.run([sys.executable, "-c", "import shush; print(shush.__file__)"],
                          env=env, capture_output=True, text=True, check=True).stdout.strip()


def run_once(side: str, index: int, env: dict[str, str], loadtest_args: list[str],
             out_dir: Path) -> dict[str, Any]:
    path = out_dir / f"{side}{index}.json"
    command = [sys.executable, "-c", LOADTEST, "loadtest", "--embedded", "--quiet",
               "--json", str(path), *loadtest_args]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not path.exists():
        sys.exit(f"run {side}{index} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    report: dict[str, Any] = json.loads(path.read_text())
    cpu = report["resources"]["cpu_us_per_event"]
    print(f"{side}{index}: {report['throughput']['accepted_eps']:>9,.0f} accepted/s  "
          f"{cpu.get('all', 0):5.1f} µs/event (shards {cpu.get('shards', 0):.1f}, routers "
          f"{cpu.get('routers', 0):.1f}, load generator {cpu.get('load generator', 0):.1f})  "
          f"loop {report['machine']['python_loop_ms']} ms", flush=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", help="git ref of A's code (default: this checkout)")
    parser.add_argument("--a-env", action="append", default=[], metavar="NAME=value")
    parser.add_argument("--b-env", action="append", default=[], metavar="NAME=value")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--out", type=Path, help="keep the JSON reports here")
    parser.add_argument("loadtest_args", nargs=argparse.REMAINDER,
                        help="after --: arguments for shush loadtest")
    args = parser.parse_args()
    loadtest_args = [a for a in args.loadtest_args if a != "--"]
    a_env, b_env = settings(args.a_env, "--a-env"), settings(args.b_env, "--b-env")
    if args.base is None and a_env == b_env:
        sys.exit("A and B are the same: give --base, or --a-env/--b-env settings that differ")
    if args.pairs < 1:
        sys.exit(f"--pairs {args.pairs}: at least 1")
    with tempfile.TemporaryDirectory(prefix="shush-ab-") as scratch:
        out_dir = args.out or Path(scratch) / "reports"
        out_dir.mkdir(parents=True, exist_ok=True)
        tree = Path(scratch) / "tree"
        try:  # from here on, a worktree made for A is removed however the A/B ends
            env_a = {**os.environ, **a_env}
            if args.base is not None:
                package_parent = worktree(args.base, Path(scratch))
                env_a["PYTHONPATH"] = os.pathsep.join(
                    p for p in (str(package_parent), os.environ.get("PYTHONPATH")) if p)
            env_b = {**os.environ, **b_env}
            code_a, code_b = code_of(env_a), code_of(env_b)
            print(f"A runs {code_a}\nB runs {code_b}", flush=True)
            if args.base is not None and code_a == code_b:
                sys.exit("A's worktree is not the shush that A imports: is PYTHONPATH ignored?")
            reports: dict[str, list[dict[str, Any]]] = {"A": [], "B": []}
            for i in range(1, args.pairs + 1):
                reports["A"].append(run_once("A", i, env_a, loadtest_args, out_dir))
                reports["B"].append(run_once("B", i, env_b, loadtest_args, out_dir))
        finally:
            if tree.exists():
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                                str(tree)], check=False)
    print()
    print(f"A: {args.base or 'this checkout'} {' '.join(args.a_env)}".rstrip())
    print(f"B: this checkout {' '.join(args.b_env)}".rstrip())
    print(format_rows(compare(reports["A"], reports["B"])))


if __name__ == "__main__":
    main()
