"""``shush demo``: a small bank scenario through the real path, printed as treatments fire.

client -> gRPC -> router -> shard -> arbitration -> channel (a JSONL file), each a separate
Ray actor; the demo tails the channel file and prints every treatment with P, C, V, L and why.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ..adapters.client import ShushClient, new_event_id
from ..engine.catalog import BUNDLED_DIR

DAY_MS = 86_400_000


def _event(customer: str, type_: str, at_ms: int, **attributes: Any) -> dict[str, Any]:
    return {"event_id": new_event_id(), "customer_id": customer, "type": type_,
            "occurred_at_ms": at_ms, "source": "demo", "attributes": attributes}


def scenario(now_ms: int) -> list[tuple[str, list[dict[str, Any]]]]:
    """Steps of (caption, events)."""
    profiles = [
        ("alice", "affluent", 52), ("bob", "student", 20), ("carol", "mass", 34),
        ("dave", "mass", 41), ("erin", "affluent", 63),
    ]
    return [
        ("Profiles arrive", [_event(c, "profile_update", now_ms - DAY_MS, name=c.title(),
                                    segment=s, age=a, zip="30301", country="US")
                             for c, s, a in profiles]),
        ("Alice withdraws 8,000 EUR from savings",
         [_event("alice", "savings_withdrawal", now_ms, amount=8000.0, balance_after=1200.0)]),
        ("Bob (a student) withdraws 6,000 EUR: the advisor call is not for students",
         [_event("bob", "savings_withdrawal", now_ms, amount=6000.0)]),
        ("Carol's card is declined at a supermarket",
         [_event("carol", "card_declined", now_ms, amount=84.5, merchant="FreshMart",
                 reason="limit")]),
        ("Dave's balance falls 500 -> 80 -> 60 (one crossing, one treatment)",
         [_event("dave", "balance_update", now_ms - 3000, balance=500.0),
          _event("dave", "balance_update", now_ms - 2000, balance=80.0),
          _event("dave", "balance_update", now_ms - 1000, balance=60.0)]),
    ]


class ChannelTail:
    """Follows the JSONL channel file and prints each treatment as it appears."""

    def __init__(self, path: Path, console: Console) -> None:
        self.path = path
        self.console = console
        self.seen: list[dict[str, Any]] = []
        self._offset = path.stat().st_size if path.exists() else 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll()
            time.sleep(0.02)

    def poll(self) -> None:
        if not self.path.exists():
            return
        with self.path.open() as handle:
            handle.seek(self._offset)
            chunk = handle.read()
        complete = chunk[:chunk.rfind("\n") + 1]
        self._offset += len(complete.encode())
        for line in complete.splitlines():
            treatment = json.loads(line)
            self.seen.append(treatment)
            if treatment["customer_id"].startswith("synthetic-"):
                continue
            f = treatment["payload"]["factors"]
            self.console.print(
                f"  [bold green]→ {treatment['customer_id']}[/]: [bold]{treatment['action_id']}"
                f"[/] via {treatment['channel']}  P {f['p']:.2f} × C {f['c']:.2f} × "
                f"V {f['v']:g} × L {f['l']:.2f} = {f['score']:.2f}")
            for why in treatment["payload"]["why"][1:]:
                self.console.print(f"      [dim]{why}[/]")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.poll()


def wait_for(tail: ChannelTail, count: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while len(tail.seen) < count and time.monotonic() < deadline:
        time.sleep(0.02)


WEATHER_SAMPLE = BUNDLED_DIR / "samples" / "nws_hard_freeze_warning_2022-12-23.xml"


def weather_step(client: ShushClient, supervisor: Any, console: Console, now_ms: int) -> int:
    """A real NWS Hard Freeze Warning for three Alabama counties, played as the weather feed:
    customers living there get a service message, their neighbours elsewhere do not."""
    from ..adapters.feeds.geo import ZipCountyIndex
    from .weather import WeatherFeed

    homes = {"frank": "36301", "gina": "36330", "hank": "35203"}  # Dothan, Enterprise, B'ham
    client.submit([_event(c, "profile_update", now_ms, name=c.title(), segment="mass", age=45,
                          zip=z, country="US") for c, z in homes.items()])
    feed = WeatherFeed(ZipCountyIndex.from_csv())
    when = datetime.fromisoformat("2022-12-23T02:00:00-06:00")  # while the alert was active
    started, _, _ = feed.poll(supervisor, WEATHER_SAMPLE, when)
    for run in started:
        console.print(f"  run {run['run_id']}: {run['selected']} customers in the warned "
                      "counties (Birmingham is not one of them)")
    return sum(run["selected"] for run in started)


def run_demo(target: str, channel_path: Path, console: Console, *,
             synthetic_events: int = 20_000, supervisor: Any = None) -> dict[str, Any]:
    tail = ChannelTail(channel_path, console)
    tail.start()
    totals: Counter[str] = Counter()
    now_ms = int(time.time() * 1000)
    started = time.perf_counter()
    with ShushClient(target) as client:
        expected = 0
        for caption, events in scenario(now_ms):
            console.print(f"[bold cyan]• {caption}[/]")
            result = client.submit(events)
            totals["accepted"] += result.accepted
            expected += {"Profiles arrive": 0}.get(caption, 1)
            wait_for(tail, expected)

        console.print("[bold cyan]• The same withdrawal of Alice's is sent again (a retry)[/]")
        again = scenario(now_ms)[1][1]
        first = client.submit(again)
        second = client.submit(again)
        totals["accepted"] += first.accepted
        totals["duplicates"] += first.duplicates + second.duplicates
        console.print(f"  duplicates dropped: {first.duplicates + second.duplicates} "
                      "(a new event id would be a new withdrawal; its moment is in cooldown)")

        console.print("[bold cyan]• Two invalid events are refused, with the field named[/]")
        bad = client.submit([
            _event("carol", "teleport", now_ms, amount=1.0),
            _event("carol", "card_declined", now_ms, amount="a lot"),
        ])
        for rejection in bad.rejected:
            console.print(f"  [red]✗ {rejection.field}[/]: {rejection.reason}")
        totals["rejected"] += len(bad.rejected)

        console.print("[bold cyan]• Black Friday: the operator sets lever L of "
                      "savings_rate_offer to 2.5[/]")
        client.set_lever("savings_rate_offer", 2.5)
        console.print("[bold cyan]• Erin withdraws 9,000 EUR[/]")
        client.submit([_event("erin", "savings_withdrawal", now_ms, amount=9000.0)])
        expected += 1
        wait_for(tail, expected)

        if supervisor is not None:
            console.print("[bold cyan]• Weather feed: an NWS Hard Freeze Warning for three "
                          "Alabama counties[/]")
            expected += weather_step(client, supervisor, console, now_ms)
            wait_for(tail, expected)

        console.print("[bold cyan]• Inbound: what should the website offer Alice now?[/]")
        decision = client.decide("alice", "web")
        for ranked in decision.ranked:
            console.print(f"  {ranked.action_id}: P {ranked.p:.2f} × C {ranked.c:.2f} × "
                          f"V {ranked.v:g} × L {ranked.l:.2f} = {ranked.score:.2f}")

        console.print(f"[bold cyan]• {synthetic_events:,} synthetic events from "
                      f"{synthetic_events // 10:,} customers[/]")
        rng = random.Random(7)
        events = []
        for i in range(synthetic_events):
            customer = f"synthetic-{rng.randrange(synthetic_events // 10)}"
            kind = rng.random()
            if kind < 0.6:
                events.append(_event(customer, "balance_update", now_ms + i,
                                     balance=rng.uniform(20, 3000)))
            elif kind < 0.9:
                events.append(_event(customer, "savings_withdrawal", now_ms + i,
                                     amount=rng.choice([50.0, 200.0, 7000.0])))
            else:
                events.append(_event(customer, "card_declined", now_ms + i, amount=10.0))
        load_started = time.perf_counter()
        result = client.submit(events)
        load_s = time.perf_counter() - load_started
        totals["accepted"] += result.accepted
        console.print(f"  {result.accepted:,} accepted in {load_s:.2f} s "
                      f"({result.accepted / load_s:,.0f} events/s through gRPC)")
        time.sleep(0.3)
    tail.stop()
    elapsed = time.perf_counter() - started
    by_action = Counter(t["action_id"] for t in tail.seen)
    table = Table(title="Shush demo: treatments fired")
    table.add_column("action")
    table.add_column("kind")
    table.add_column("treatments", justify="right")
    for action_id, count in sorted(by_action.items()):
        kind = next(t["payload"]["kind"] for t in tail.seen if t["action_id"] == action_id)
        table.add_row(action_id, kind, f"{count:,}")
    console.print(table)
    console.print(f"events accepted {totals['accepted']:,}, duplicates dropped "
                  f"{totals['duplicates']}, rejected {totals['rejected']} (kept in the dead "
                  f"letter), treatments {len(tail.seen):,}, {elapsed:.1f} s")
    return {"treatments": len(tail.seen), "by_action": dict(by_action), **totals}
