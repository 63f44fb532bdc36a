"""The 24×7 sweep: time-based criteria compiled to vectorized masks over ``HotColumns``.

A criterion is declarative (YAML/JSON, validated by pydantic)::

    name: no_deposit_30d
    when: {absent: {signal: deposit, for_s: 2592000}}
    moment: no_recent_deposit
    urgency: 0.4
    half_life_s: 1209600

    when: {all: [{field: churn_score, op: ">", value: 0.8}, {no_contact_for_s: 1209600}]}

Conditions: ``all`` / ``any`` (lists), ``not``; ``{field, op, value}`` on a numeric column
(NaN, i.e. unknown, never matches); ``{field, in: [...]}`` on a categorical column;
``{field, has_any: [...]}`` / ``{field, has_all: [...]}`` on a set column;
``{absent: {signal, for_s, if_never}}``: the latest signal of that kind is at least ``for_s``
old (exactly 30 days counts, like the absence detector); ``{no_contact_for_s, if_never}``: the
latest contact is at least that old. ``if_never`` says what a customer who never had one is:
``since_first_seen`` (absent if first seen at least ``for_s`` ago; the default for ``absent``),
``due`` (the default for ``no_contact_for_s``) or ``skip``.

Episodes (``refire: episode``, the default): a customer is due once when the condition turns
true, and re-arms when a check finds it false again, or when a signal or contact it reads is
newer than the firing (a deposit after the reminder). ``cooldown_s`` is the least time between
two firings; ``refire: interval`` fires whenever the condition holds and the cooldown has passed.
The moment id is ``sweep:<name>@<episode>``, where the episode is the newest time the criterion
reads (e.g. the last deposit), so the same episode makes the same id even if the sweep state
were lost: the treatment ledger then refuses the repeat.

``SweepCursor`` walks the rows in chunks so a shard interleaves the sweep with triggered work.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal, Union

import msgpack
import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from .errors import CodecError, ConfigError
from .hot_columns import NEVER_MS, HotColumns, HotColumnsSpec
from .models import Moment

__all__ = [
    "Condition", "CriterionDue", "Sweep", "SweepConfig", "SweepCriterion", "SweepCursor",
    "SweepProgress", "rows_per_tick",
]

IfNever = Literal["since_first_seen", "due", "skip"]
Mask = npt.NDArray[np.bool_]
_Eval = Callable[[HotColumns, slice, int], Mask]
_TimeColumn = Callable[[HotColumns], npt.NDArray[np.int64]]
STATE_VERSION: Final = 1
_OPS: Final[dict[str, Callable[[Any, Any], Any]]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
    "==": operator.eq, "!=": operator.ne,
}


class _Term(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class AbsentSpec(_Term):
    signal: str = Field(min_length=1, description="Signal kind (a HotColumns signal)")
    for_s: float = Field(gt=0, description="Silence that makes the condition true")
    if_never: IfNever = Field("since_first_seen", description="A customer who never had one")


class AbsentTerm(_Term):
    absent: AbsentSpec


class NoContactTerm(_Term):
    no_contact_for_s: float = Field(gt=0, description="Time since the latest contact")
    if_never: IfNever = Field("due", description="A customer never contacted")


class CompareTerm(_Term):
    field: str = Field(min_length=1, description="A numeric HotColumns field")
    op: Literal["<", "<=", ">", ">=", "==", "!="]
    value: float


class InTerm(_Term):
    field: str = Field(min_length=1, description="A categorical HotColumns field")
    values: tuple[str, ...] = Field(alias="in", min_length=1)


class HasAnyTerm(_Term):
    field: str = Field(min_length=1, description="A set HotColumns field")
    has_any: tuple[str, ...] = Field(min_length=1)


class HasAllTerm(_Term):
    field: str = Field(min_length=1, description="A set HotColumns field")
    has_all: tuple[str, ...] = Field(min_length=1)


class AllTerm(_Term):
    all: tuple[Condition, ...] = Field(min_length=1)


class AnyTerm(_Term):
    any: tuple[Condition, ...] = Field(min_length=1)


class NotTerm(_Term):
    not_: Condition = Field(alias="not")


_KEY_TAGS: Final = (("all", "all"), ("any", "any"), ("not", "not"), ("not_", "not"),
                    ("absent", "absent"), ("no_contact_for_s", "no_contact"), ("op", "compare"),
                    ("in", "in"), ("values", "in"), ("has_any", "has_any"),
                    ("has_all", "has_all"))
_CLASS_TAGS: Final[dict[type, str]] = {
    AllTerm: "all", AnyTerm: "any", NotTerm: "not", AbsentTerm: "absent",
    NoContactTerm: "no_contact", CompareTerm: "compare", InTerm: "in", HasAnyTerm: "has_any",
    HasAllTerm: "has_all",
}


def _tag(value: Any) -> str | None:
    if isinstance(value, dict):
        return next((tag for key, tag in _KEY_TAGS if key in value), None)
    return _CLASS_TAGS.get(type(value))


Condition = Annotated[
    Union[  # noqa: UP007 - Tag annotations need the explicit Union form
        Annotated[AllTerm, Tag("all")], Annotated[AnyTerm, Tag("any")],
        Annotated[NotTerm, Tag("not")], Annotated[AbsentTerm, Tag("absent")],
        Annotated[NoContactTerm, Tag("no_contact")], Annotated[CompareTerm, Tag("compare")],
        Annotated[InTerm, Tag("in")], Annotated[HasAnyTerm, Tag("has_any")],
        Annotated[HasAllTerm, Tag("has_all")],
    ],
    Discriminator(_tag, custom_error_type="condition_kind",
                  custom_error_message="a condition needs one of the keys all, any, not, "
                  "absent, no_contact_for_s, op, in, has_any, has_all"),
]
for _model in (AllTerm, AnyTerm, NotTerm):
    _model.model_rebuild()


class SweepCriterion(BaseModel):
    """A time-based criterion and the moment it injects into each due customer."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")
    when: Condition
    moment: str = Field(min_length=1, description="Name of the moment injected")
    urgency: float = Field(0.5, ge=0, le=1)
    half_life_s: float = Field(86_400.0, gt=0)
    ttl_s: float | None = Field(None, gt=0, description="Useful life; default 4 half-lives")
    cooldown_s: float = Field(0.0, ge=0, description="Least time between two firings")
    refire: Literal["episode", "interval"] = "episode"
    description: str = ""

    def moment_for(self, customer_id: str, episode_ms: int, now_ms: int) -> Moment:
        return Moment(
            moment_id=f"sweep:{self.name}@{episode_ms}", name=self.moment,
            customer_id=customer_id, occurred_at_ms=now_ms, urgency=self.urgency,
            half_life_s=self.half_life_s,
            ttl_s=self.ttl_s if self.ttl_s is not None else 4 * self.half_life_s,
            detector_id=f"sweep:{self.name}", evidence=())


class SweepConfig(BaseModel):
    """Hang under ``EngineConfig.sweep``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cadence_s: float = Field(300.0, gt=0, description="Every customer is checked this often")
    tick_s: float = Field(0.05, gt=0, description="Interval between sweep chunks of a shard")
    min_chunk_rows: int = Field(1_000, gt=0, description="Least rows checked per tick")
    max_treat_per_tick: int = Field(200, gt=0, description="Due customers decided per tick")
    hot_columns: HotColumnsSpec = HotColumnsSpec()
    criteria: tuple[SweepCriterion, ...] = ()


@dataclass(frozen=True, slots=True)
class _Compiled:
    criterion: SweepCriterion
    mask: _Eval
    times: tuple[_TimeColumn, ...]  # columns whose news re-arms, and which name the episode


@dataclass(frozen=True, slots=True)
class CriterionDue:
    """Rows due for one criterion in one check, with each row's episode time."""

    criterion: SweepCriterion
    rows: npt.NDArray[np.int64]
    episode_ms: npt.NDArray[np.int64]

    def moments(self, columns: HotColumns, now_ms: int) -> list[Moment]:
        out = []
        for row, episode in zip(self.rows.tolist(), self.episode_ms.tolist(), strict=True):
            customer_id = columns.customer_id(row)
            if customer_id is not None:
                out.append(self.criterion.moment_for(customer_id, episode, now_ms))
        return out


def _never_rule(col: npt.NDArray[np.int64], found: Mask, if_never: IfNever,
                first_seen: npt.NDArray[np.int64], cutoff: int) -> Mask:
    never: Mask = col == NEVER_MS
    if if_never == "due":
        return found | never
    if if_never == "since_first_seen":
        started: Mask = (first_seen != NEVER_MS) & (first_seen <= cutoff)
        return found | (never & started)
    return found


class _Compiler:
    def __init__(self, spec: HotColumnsSpec, name: str) -> None:
        self.spec, self.name = spec, name
        self.times: list[_TimeColumn] = []

    def fail(self, reason: str, path: str) -> ConfigError:
        return ConfigError(reason, source=f"sweep criterion {self.name!r}", field=path)

    def field(self, field: str, kind: str, path: str) -> None:
        found = self.spec.kind_of(field)
        if found != kind:
            what = f"is a {found} field" if found else "is not a hot column"
            raise self.fail(f"{field!r} {what}; expected a {kind} field", path)

    def compile(self, cond: Condition, path: str) -> _Eval:
        if isinstance(cond, AllTerm | AnyTerm):
            parts = [self.compile(c, f"{path}.{i}") for i, c in
                     enumerate(cond.all if isinstance(cond, AllTerm) else cond.any)]
            join = np.logical_and if isinstance(cond, AllTerm) else np.logical_or

            def combine(cols: HotColumns, sl: slice, now: int) -> Mask:
                out = parts[0](cols, sl, now)
                for part in parts[1:]:
                    out = join(out, part(cols, sl, now))
                return out
            return combine
        if isinstance(cond, NotTerm):
            inner = self.compile(cond.not_, f"{path}.not")
            return lambda cols, sl, now: ~inner(cols, sl, now)
        if isinstance(cond, AbsentTerm):
            return self._absent(cond.absent, f"{path}.absent")
        if isinstance(cond, NoContactTerm):
            period_ms, if_never = int(cond.no_contact_for_s * 1000), cond.if_never
            self.times.append(lambda cols: cols.last_contact)

            def no_contact(cols: HotColumns, sl: slice, now: int) -> Mask:
                col, cutoff = cols.last_contact[sl], now - period_ms
                found = (col != NEVER_MS) & (col <= cutoff)
                return _never_rule(col, found, if_never, cols.first_seen[sl], cutoff)
            return no_contact
        if isinstance(cond, CompareTerm):
            self.field(cond.field, "numeric", f"{path}.field")
            op, name, value = _OPS[cond.op], cond.field, cond.value

            def compare(cols: HotColumns, sl: slice, now: int) -> Mask:
                x = cols.numeric(name)[sl]
                out: Mask = op(x, value)
                return out & ~np.isnan(x) if cond.op == "!=" else out
            return compare
        if isinstance(cond, InTerm):
            self.field(cond.field, "categorical", f"{path}.field")
            name, values = cond.field, cond.values
            return lambda cols, sl, now: cols.code_lookup(name, values)[cols.codes(name)[sl]]
        if isinstance(cond, HasAnyTerm | HasAllTerm):
            self.field(cond.field, "set", f"{path}.field")
            return self._has(cond)
        raise self.fail(f"unknown condition {type(cond).__name__}", path)  # pragma: no cover

    def _absent(self, spec: Any, path: str) -> _Eval:
        if spec.signal not in self.spec.signals:
            raise self.fail(f"signal {spec.signal!r} is not a hot column", f"{path}.signal")
        signal, period_ms, if_never = spec.signal, int(spec.for_s * 1000), spec.if_never
        self.times.append(lambda cols: cols.last_seen(signal))

        def absent(cols: HotColumns, sl: slice, now: int) -> Mask:
            col, cutoff = cols.last_seen(signal)[sl], now - period_ms
            found = (col != NEVER_MS) & (col <= cutoff)
            return _never_rule(col, found, if_never, cols.first_seen[sl], cutoff)
        return absent

    def _has(self, cond: HasAnyTerm | HasAllTerm) -> _Eval:
        name = cond.field
        every = isinstance(cond, HasAllTerm)
        values = cond.has_all if isinstance(cond, HasAllTerm) else cond.has_any

        def has(cols: HotColumns, sl: slice, now: int) -> Mask:
            bits, all_known = cols.bits_for(name, values)
            masks = cols.set_masks(name)[sl]
            if every:
                if not all_known:
                    return np.zeros(len(masks), np.bool_)
                out: Mask = (masks & np.uint64(bits)) == np.uint64(bits)
                return out
            held: Mask = (masks & np.uint64(bits)) != 0
            return held
        return has


class _State:
    __slots__ = ("armed", "fired_s")

    def __init__(self, n: int) -> None:
        self.armed = np.ones(n, np.bool_)
        self.fired_s = np.zeros(n, np.uint32)  # 0: never fired

    def grow(self, n: int) -> None:
        if n > len(self.armed):
            armed, fired = np.ones(n, np.bool_), np.zeros(n, np.uint32)
            armed[:len(self.armed)], fired[:len(self.fired_s)] = self.armed, self.fired_s
            self.armed, self.fired_s = armed, fired


class Sweep:
    """Compiled criteria and, per criterion and row, whether its episode already fired."""

    def __init__(self, criteria: Sequence[SweepCriterion], spec: HotColumnsSpec) -> None:
        names = [c.name for c in criteria]
        if len(set(names)) != len(names):
            dupe = next(n for n in names if names.count(n) > 1)
            raise ConfigError(f"criterion {dupe!r} is declared twice", source="sweep",
                              field="criteria")
        self._compiled = []
        for criterion in criteria:
            compiler = _Compiler(spec, criterion.name)
            mask = compiler.compile(criterion.when, "when")
            self._compiled.append(_Compiled(criterion, mask, tuple(compiler.times)))
        self._state = {c.name: _State(0) for c in criteria}

    @property
    def criteria(self) -> tuple[SweepCriterion, ...]:
        return tuple(c.criterion for c in self._compiled)

    def check(self, columns: HotColumns, now_ms: int, start: int = 0, stop: int | None = None,
              *, commit: bool = True) -> list[CriterionDue]:
        """Rows in ``[start, stop)`` due for each criterion at ``now_ms``; with ``commit`` (the
        default) they count as fired, so the next check does not return them again."""
        stop = columns.size if stop is None else min(stop, columns.size)
        if stop <= start:
            return []
        sl, now_s = slice(start, stop), max(1, now_ms // 1000)
        alive = columns.alive[sl]
        found: list[CriterionDue] = []
        for compiled in self._compiled:
            criterion, state = compiled.criterion, self._state[compiled.criterion.name]
            state.grow(columns.capacity)
            cond = compiled.mask(columns, sl, now_ms) & alive
            armed, fired = state.armed[sl], state.fired_s[sl]
            fired64 = fired.astype(np.int64)
            if criterion.refire == "episode":
                rearm = ~cond
                news_ms = (fired64 + 1) * 1000
                for column in compiled.times:
                    rearm |= (fired64 > 0) & (column(columns)[sl] >= news_ms)
                armed_now = armed | rearm
            else:
                armed_now = np.ones(len(cond), np.bool_)
            cooled = (fired64 == 0) | (now_s - fired64 >= math.ceil(criterion.cooldown_s))
            due = cond & armed_now & cooled
            if commit:
                armed[:] = armed_now & ~due
                fired[due] = now_s
            rows = np.flatnonzero(due).astype(np.int64) + start
            found.append(CriterionDue(criterion, rows, self._episodes(compiled, columns, rows,
                                                                      now_ms)))
        return found

    def due(self, columns: HotColumns, now_ms: int, start: int = 0,
            stop: int | None = None) -> npt.NDArray[np.int64]:
        """Rows due for any criterion (marked fired), sorted."""
        hits = [d.rows for d in self.check(columns, now_ms, start, stop)]
        return np.unique(np.concatenate(hits)) if hits else np.zeros(0, np.int64)

    @staticmethod
    def _episodes(compiled: _Compiled, columns: HotColumns,
                  rows: npt.NDArray[np.int64], now_ms: int) -> npt.NDArray[np.int64]:
        if not compiled.times:
            return np.full(len(rows), now_ms, np.int64)
        episode = np.full(len(rows), NEVER_MS, np.int64)
        for column in compiled.times:
            episode = np.maximum(episode, column(columns)[rows])
        never = episode == NEVER_MS
        episode[never] = columns.first_seen[rows[never]]
        return episode

    # -- durable state (snapshot with the HotColumns it indexes) ---------------------------
    def state_to_bytes(self, rows: int) -> bytes:
        packed: bytes = msgpack.packb({"v": STATE_VERSION, "k": "sweep_state", "rows": rows,
                                       "criteria": {
            name: [st.armed[:rows].tobytes(), st.fired_s[:rows].tobytes()]
            for name, st in self._state.items() if len(st.armed) >= rows}},
            use_bin_type=True)
        return packed

    def restore_state(self, data: bytes) -> None:
        """Take fired flags back; criteria that are new start armed, removed ones are dropped."""
        try:
            env = msgpack.unpackb(data, raw=False)
            if env.get("v") != STATE_VERSION or env.get("k") != "sweep_state":
                raise CodecError(f"not a sweep state of version {STATE_VERSION}")
            for name, (armed, fired) in env["criteria"].items():
                if name in self._state:
                    state = _State(env["rows"])
                    state.armed[:] = np.frombuffer(armed, np.bool_)
                    state.fired_s[:] = np.frombuffer(fired, np.uint32)
                    self._state[name] = state
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise CodecError(f"undecodable sweep state: {exc}") from exc


@dataclass(slots=True)
class SweepProgress:
    cycles: int = 0
    rows_checked: int = 0
    due_found: int = 0
    position: int = 0
    rows: int = 0
    cycle_started_ms: int | None = None
    last_cycle_ms: int | None = None  # duration of the last complete cycle (engine clock)


class SweepCursor:
    """Walks every row in chunks, cycle after cycle, counting progress."""

    def __init__(self, chunk_rows: int = 10_000) -> None:
        if chunk_rows <= 0:
            raise ValueError("chunk_rows must be positive")
        self.chunk_rows = chunk_rows
        self.progress = SweepProgress()

    def step(self, sweep: Sweep, columns: HotColumns, now_ms: int,
             rows: int | None = None) -> list[CriterionDue]:
        """Check the next chunk (``rows`` or ``chunk_rows``); wraps to a new cycle at the end."""
        p = self.progress
        p.rows = columns.size
        if columns.size == 0:
            return []
        if p.cycle_started_ms is None:
            p.cycle_started_ms = now_ms
        start = p.position
        stop = min(columns.size, start + (rows or self.chunk_rows))
        found = sweep.check(columns, now_ms, start, stop) if stop > start else []
        p.rows_checked += max(0, stop - start)
        p.due_found += sum(len(d.rows) for d in found)
        p.position = stop
        if stop >= columns.size:
            p.cycles += 1
            p.last_cycle_ms = now_ms - p.cycle_started_ms
            p.position, p.cycle_started_ms = 0, now_ms
        return found


def rows_per_tick(total_rows: int, cadence_s: float, tick_s: float, min_rows: int = 1) -> int:
    """Rows to check per tick so that every row is checked at least once per ``cadence_s``."""
    ticks = max(1.0, cadence_s / tick_s)
    return max(min_rows, math.ceil(total_rows / ticks))
