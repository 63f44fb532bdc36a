"""What keeps a shard busy between triggers: the sweep and emergency runs.

Hot per-customer fields live in numpy columns (``engine.hot_columns``) so that time-based
criteria ("no deposit in 30 days") and run populations ("these 25 zip codes") are selected in
vectorized steps; each selected customer is then injected a moment and decided on its own.
The sweep checks a chunk of rows per tick, sized so that every customer is checked once per
``sweep.cadence_s``; a run injects at most its share of ``rate_per_s`` (a token bucket), so
triggered traffic keeps flowing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..engine.catalog import Catalog
from ..engine.customer import CustomerState
from ..engine.errors import ExpressionError
from ..engine.hot_columns import (
    CategoricalColumn,
    HotColumns,
    HotColumnsSpec,
    Normalize,
    SetColumn,
)
from ..engine.models import Moment
from ..engine.runs import EmergencyRun, RunProgress, RunsConfig, RunState, Throttle
from ..engine.sweep import Sweep, SweepConfig, SweepCursor, rows_per_tick
from ..policies.expressions import Expression, compile_expression

PROFILE_COLUMNS: tuple[tuple[str, Normalize], ...] = (
    ("zip", "zip5"), ("region", "none"), ("segment", "none"), ("country", "upper"))


def default_spec(catalog: Catalog, with_signals: bool) -> HotColumnsSpec:
    """The usual run selectors (zip, region, segment, country, products) that the catalog's
    profile signals declare, and, when sweep criteria may read them, every signal kind's
    last-seen time (kept only then: each column costs every event a write)."""
    profile_attributes = {name: attr for s in catalog.signals.values() if s.updates_profile
                          for name, attr in s.attributes.items()}
    return HotColumnsSpec(
        signals=tuple(sorted(catalog.signals)) if with_signals else (),
        categorical=tuple(CategoricalColumn(name=name, normalize=norm)
                          for name, norm in PROFILE_COLUMNS if name in profile_attributes),
        sets=(SetColumn(name="products"),) if "products" in profile_attributes else ())


@dataclass(slots=True)
class ActiveRun:
    run: EmergencyRun
    progress: RunProgress
    throttle: Throttle
    queue: deque[str] = field(default_factory=deque)
    where: Expression | None = None


class ShardAlwaysOn:
    def __init__(self, sweep: SweepConfig, runs: RunsConfig, num_shards: int,
                 catalog: Catalog) -> None:
        self.config = sweep
        self.runs_config = runs
        self.num_shards = num_shards
        spec = sweep.hot_columns
        if spec == HotColumnsSpec():
            spec = default_spec(catalog, with_signals=bool(sweep.criteria))
        self.hot = HotColumns(spec)
        self.sweep = Sweep(sweep.criteria, spec)
        self.cursor = SweepCursor(sweep.min_chunk_rows)
        self.due: deque[Moment] = deque()
        self.runs: dict[str, ActiveRun] = {}
        self.run_of_moment: dict[str, str] = {}

    # -- columns --------------------------------------------------------------------------
    def observe(self, customers: Iterable[CustomerState],
                profiled: Container[str] | None = None,
                earliest_event_ms: Mapping[str, int] | None = None) -> None:
        """Copy changed customers into the hot columns; with ``profiled``, only those
        customers' profiles changed; with ``earliest_event_ms``, the earliest time of the
        events each customer has just taken."""
        hot = self.hot
        for customer in customers:
            customer_id = customer.customer_id
            hot.update(customer, profile=profiled is None or customer_id in profiled,
                       earliest_event_ms=None if earliest_event_ms is None
                       else earliest_event_ms.get(customer_id))

    def contacted(self, customer_id: str, at_ms: int) -> None:
        self.hot.set_contact(customer_id, at_ms)

    # -- the sweep ------------------------------------------------------------------------
    def sweep_step(self, now_ms: int) -> list[Moment]:
        """Check the next chunk; return at most ``max_treat_per_tick`` due moments."""
        if self.sweep.criteria:
            rows = rows_per_tick(self.hot.size, self.config.cadence_s, self.config.tick_s,
                                 self.config.min_chunk_rows)
            for found in self.cursor.step(self.sweep, self.hot, now_ms, rows):
                self.due.extend(found.moments(self.hot, now_ms))
        take = min(len(self.due), self.config.max_treat_per_tick)
        return [self.due.popleft() for _ in range(take)]

    # -- emergency runs -------------------------------------------------------------------
    def start_run(self, run: EmergencyRun, now_ms: int) -> RunProgress:
        if run.run_id in self.runs:
            return self.runs[run.run_id].progress
        run.population.check(self.hot.spec)
        ids = self.hot.ids(run.population.select(self.hot))
        progress = RunProgress(run.run_id, RunState.RUNNING, selected=len(ids),
                               started_ms=now_ms)
        rate = run.shard_rate(self.num_shards)
        active = ActiveRun(run, progress,
                           Throttle(rate, max(1.0, rate * self.runs_config.burst_s), now_ms),
                           deque(ids))
        if run.population.where:
            active.where = compile_expression(run.population.where)
        self.runs[run.run_id] = active
        self.run_of_moment[run.moment_id] = run.run_id
        self._finish_if_done(active, now_ms)
        return progress

    def run_step(self, now_ms: int, customer: Any) -> list[tuple[Moment, bool]]:
        """Moments to inject now, within each run's rate: ``(moment, bypass_soft_caps)``.

        ``customer(customer_id)`` gives the state a run's ``where`` expression is checked on.
        """
        out: list[tuple[Moment, bool]] = []
        for active in self.runs.values():
            if active.progress.state is not RunState.RUNNING:
                continue
            granted = active.throttle.take(len(active.queue), now_ms)
            for _ in range(granted):
                customer_id = active.queue.popleft()
                if active.where is not None and not self._where(active, customer(customer_id),
                                                                now_ms):
                    active.progress.skipped += 1
                    continue
                out.append((active.run.moment_for(customer_id, now_ms),
                            active.run.bypass_soft_caps))
                active.progress.injected += 1
            self._finish_if_done(active, now_ms)
        return out

    def _where(self, active: ActiveRun, state: CustomerState, now_ms: int) -> bool:
        assert active.where is not None
        try:
            return bool(active.where.evaluate(state.namespace(now_ms)))
        except ExpressionError:
            active.progress.errors += 1
            return False

    def _finish_if_done(self, active: ActiveRun, now_ms: int) -> None:
        if not active.queue and active.progress.state is RunState.RUNNING:
            active.progress.state = RunState.DONE
            active.progress.finished_ms = now_ms

    def treated(self, moment_id: str | None) -> None:
        run_id = self.run_of_moment.get(moment_id or "")
        if run_id is not None:
            self.runs[run_id].progress.treated += 1

    def progress(self) -> list[dict[str, Any]]:
        return [a.progress.to_wire() for a in self.runs.values()]

    def sweep_progress(self) -> dict[str, Any]:
        p = self.cursor.progress
        return {"cycles": p.cycles, "rows_checked": p.rows_checked, "due_found": p.due_found,
                "rows": p.rows, "last_cycle_ms": p.last_cycle_ms, "queued": len(self.due)}
