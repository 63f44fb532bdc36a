"""``HotColumns``: one shard's hot per-customer fields as numpy columns, for every customer.

The sweep and emergency runs select customers in vectorized steps over these columns, so they
hold every customer of the shard, passivated ones included (a cyclic scan never activates a
customer to read it). One row per customer, in arrival order; rows are never reused. Columns:

- ``seen:<signal>`` int64 ms: event time of the latest signal of each declared kind
  (``NEVER_MS`` = never seen);
- ``num:<name>`` float64: declared numeric fields (NaN = unknown), read from the latest signal
  of a type (``last[signal][attribute]``) or from the profile;
- ``cat:<name>`` uint8/16/32 codes of small-cardinality profile attributes (zip, region,
  segment, country) with a per-column vocabulary (code 0 = unknown; widened when it fills up);
- ``set:<name>`` uint64 bit masks of set-valued profile attributes (products held), at most 64
  distinct values per column;
- ``contact`` int64 ms: the latest contact (treatment sent); ``first_seen`` int64 ms: the
  earliest event time observed for the customer; ``alive`` bool: False once discarded.

Updating a customer is O(1) (``update(customer)`` after each turn). ``to_bytes``/``from_bytes``
snapshot everything as a versioned msgpack envelope of raw arrays; restoring under a changed
spec keeps the columns both specs share and starts new ones empty.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal, Protocol

import msgpack
import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import CodecError, ConfigError

__all__ = [
    "NEVER_MS", "CategoricalColumn", "CustomerLike", "HotColumns", "HotColumnsSpec",
    "NumericColumn", "SetColumn", "normalize_value", "spec_from_mapping",
]

NEVER_MS: Final = int(np.iinfo(np.int64).min)
SNAPSHOT_VERSION: Final = 1
MAX_SET_VALUES: Final = 64
Normalize = Literal["none", "upper", "lower", "zip5"]
_CODE_TYPES: Final = (np.uint8, np.uint16, np.uint32)
_CODE_MAX: Final = {np.dtype(t): int(np.iinfo(t).max) for t in _CODE_TYPES}


class CustomerLike(Protocol):
    """What ``HotColumns.update`` reads of a customer (``CustomerState`` fits), and
    ``hot_row``, where it keeps the customer's row (-1: not looked up yet)."""

    hot_row: int

    @property
    def customer_id(self) -> str: ...

    @property
    def last(self) -> dict[str, dict[str, Any]]: ...

    @property
    def profile(self) -> dict[str, Any]: ...


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NumericColumn(_Frozen):
    name: str = Field(min_length=1, description="Column name used by criteria")
    signal: str | None = Field(None, description="Read last[signal][attribute]; None: profile")
    attribute: str | None = Field(None, description="Attribute read; default: the name")

    @property
    def source_attribute(self) -> str:
        return self.attribute or self.name


class CategoricalColumn(_Frozen):
    name: str = Field(min_length=1, description="Column name used by criteria and filters")
    attribute: str | None = Field(None, description="Profile attribute; default: the name")
    normalize: Normalize = Field("none", description="zip5: '02134-1234' -> '02134'")

    @property
    def source_attribute(self) -> str:
        return self.attribute or self.name


class SetColumn(_Frozen):
    name: str = Field(min_length=1, description="Column name, e.g. products")
    attribute: str | None = Field(None, description="Profile attribute holding a list or 'a,b'")

    @property
    def source_attribute(self) -> str:
        return self.attribute or self.name


class HotColumnsSpec(_Frozen):
    """Which hot fields a shard keeps in columns (typically derived from the catalog)."""

    signals: tuple[str, ...] = Field((), description="Signal kinds whose last-seen time is kept")
    numeric: tuple[NumericColumn, ...] = ()
    categorical: tuple[CategoricalColumn, ...] = ()
    sets: tuple[SetColumn, ...] = ()

    @model_validator(mode="after")
    def _unique(self) -> HotColumnsSpec:
        names = [c.name for c in self.numeric] + [c.name for c in self.categorical] + [
            c.name for c in self.sets]
        for seen_names, what in ((names, "field"), (list(self.signals), "signal")):
            dupes = sorted({n for n in seen_names if seen_names.count(n) > 1})
            if dupes:
                raise ValueError(f"{what} {dupes[0]!r} is declared twice")
        return self

    def kind_of(self, name: str) -> Literal["numeric", "categorical", "set"] | None:
        if any(c.name == name for c in self.numeric):
            return "numeric"
        if any(c.name == name for c in self.categorical):
            return "categorical"
        if any(c.name == name for c in self.sets):
            return "set"
        return None

    def row_bytes(self) -> int:
        """Column bytes per customer at the narrowest code width."""
        return 8 * (len(self.signals) + len(self.numeric) + len(self.sets) + 2) + 1 + len(
            self.categorical)


def normalize_value(value: Any, how: Normalize) -> str | None:
    """The form a categorical value is stored and matched in; None for missing or unusable."""
    if value is None or isinstance(value, bool | dict | list):
        return None
    text = str(value).strip()
    if not text:
        return None
    if how == "upper":
        return text.upper()
    if how == "lower":
        return text.lower()
    if how == "zip5":
        digits = text.partition("-")[0]
        return digits.zfill(5) if digits.isdigit() and len(digits) <= 5 else None
    return text


def _set_items(value: Any) -> list[str]:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list | tuple | set | frozenset):
        return [str(item) for item in value if item is not None]
    return []


class _Vocabulary:
    __slots__ = ("codes", "values")

    def __init__(self, values: Iterable[str] = ()) -> None:
        self.values: list[str | None] = [None, *values]  # code 0 = unknown
        self.codes: dict[str, int] = {v: i for i, v in enumerate(self.values) if v is not None}

    def code(self, value: str) -> int:
        code = self.codes.get(value)
        if code is None:
            code = len(self.values)
            self.values.append(value)
            self.codes[value] = code
        return code


class HotColumns:
    """Hot per-customer fields of one shard, one row per customer (see the module doc)."""

    def __init__(self, spec: HotColumnsSpec, capacity: int = 1024) -> None:
        self.spec = spec
        self._capacity = max(16, capacity)
        self._size = 0
        self._rows: dict[str, int] = {}
        self._ids: list[str | None] = []
        self._vocab = {c.name: _Vocabulary() for c in spec.categorical}
        self._bits = {c.name: _Vocabulary() for c in spec.sets}
        self.overflow: dict[str, set[str]] = {c.name: set() for c in spec.sets}
        n = self._capacity
        self._arrays: dict[str, npt.NDArray[Any]] = {
            "contact": np.full(n, NEVER_MS, np.int64),
            "first_seen": np.full(n, NEVER_MS, np.int64),
            "alive": np.zeros(n, np.bool_),
        }
        for signal in spec.signals:
            self._arrays[f"seen:{signal}"] = np.full(n, NEVER_MS, np.int64)
        for num in spec.numeric:
            self._arrays[f"num:{num.name}"] = np.full(n, np.nan, np.float64)
        for cat in spec.categorical:
            self._arrays[f"cat:{cat.name}"] = np.zeros(n, np.uint8)
        for col in spec.sets:
            self._arrays[f"set:{col.name}"] = np.zeros(n, np.uint64)
        # columns an event can change without touching the profile (see ``update``)
        self._event_columns = bool(spec.signals) or any(num.signal is not None
                                                          for num in spec.numeric)

    # -- rows ------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        """Rows in use (discarded customers keep their row)."""
        return self._size

    @property
    def capacity(self) -> int:
        return self._capacity

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, customer_id: object) -> bool:
        return customer_id in self._rows

    def row_of(self, customer_id: str) -> int | None:
        return self._rows.get(customer_id)

    def customer_id(self, row: int) -> str | None:
        return self._ids[row] if 0 <= row < self._size else None

    def ids(self, rows: Iterable[int] | npt.NDArray[np.integer[Any]]) -> list[str]:
        """Customer ids of ``rows`` (discarded rows are left out)."""
        found = (self._ids[int(r)] for r in rows)
        return [cid for cid in found if cid is not None]

    def ensure(self, customer_id: str) -> int:
        """The customer's row, added (empty) if new."""
        row = self._rows.get(customer_id)
        if row is None:
            row = self._size
            if row == self._capacity:
                self._grow(row + 1)
            self._size = row + 1
            self._rows[customer_id] = row
            self._ids.append(customer_id)
            self._arrays["alive"][row] = True
        return row

    def add_many(self, customer_ids: Iterable[str]) -> npt.NDArray[np.int64]:
        """Rows of many customers at once (bulk load: recovery, benchmarks)."""
        new = [cid for cid in dict.fromkeys(customer_ids) if cid not in self._rows]
        start = self._size
        if start + len(new) > self._capacity:
            self._grow(start + len(new))
        self._rows.update(zip(new, range(start, start + len(new)), strict=True))
        self._ids.extend(new)
        self._size = start + len(new)
        self._arrays["alive"][start:self._size] = True
        return np.arange(start, self._size, dtype=np.int64)

    def discard(self, customer_id: str) -> bool:
        """Forget a customer (erasure): its row stays, dead, and is never selected again."""
        row = self._rows.pop(customer_id, None)
        if row is None:
            return False
        self._ids[row] = None
        for key, array in self._arrays.items():
            array[row] = self._empty(key)
        return True

    def _empty(self, key: str) -> Any:
        if key.startswith("num:"):
            return np.nan
        if key in ("contact", "first_seen") or key.startswith("seen:"):
            return NEVER_MS
        return 0

    def _grow(self, needed: int) -> None:
        capacity = self._capacity
        while capacity < needed:
            capacity *= 2
        for key, old in self._arrays.items():
            new = np.full(capacity, self._empty(key), old.dtype)
            new[:self._size] = old[:self._size]
            self._arrays[key] = new
        self._capacity = capacity

    # -- updates ---------------------------------------------------------------------------
    def update(self, customer: CustomerLike, *, last_contact_ms: int | None = None,
               profile: bool = True, earliest_event_ms: int | None = None) -> int:
        """Copy the customer's hot fields into its row (added if new); O(1). Returns the row.

        ``profile=False`` when the caller knows the profile did not change since the last
        update: its columns are left as they are (normalizing and coding them was a sixth of
        a shard's work under load, for events that never touch the profile). A new row always
        takes the profile.

        ``earliest_event_ms``: the earliest time of the events applied since the last update,
        when the caller knows it (a shard after a batch). Without it ``first_seen`` comes from
        the latest time of each signal type the customer holds, a scan that was a tenth of a
        shard's per-event work when the spec watches no signal."""
        customer_id = customer.customer_id
        row = customer.hot_row  # kept on the customer: its id's lookup in ``_rows``, a table
        # of every customer of the shard, missed the cache (1.6 % of a saturated shard); the
        # check is ``self.customer_id(row) == customer_id``, inlined (once per customer a turn)
        if not (0 <= row < self._size and self._ids[row] == customer_id):
            found = self._rows.get(customer_id)
            if found is None:
                found, profile = self.ensure(customer_id), True
            row = customer.hot_row = found
        if profile or self._event_columns or earliest_event_ms is None:
            earliest = self._copy_columns(row, customer, profile, earliest_event_ms)
        else:  # nothing but first_seen can move (a shard's turn, for most customers)
            earliest = earliest_event_ms
        if earliest != NEVER_MS:
            first = self._arrays["first_seen"]
            current = first.item(row)  # compare as Python ints: numpy scalars cost more
            if current == NEVER_MS or earliest < current:
                first[row] = earliest
        if last_contact_ms is not None:
            self.set_contact(customer.customer_id, last_contact_ms)
        return row

    def _copy_columns(self, row: int, customer: CustomerLike, profile: bool,
                      earliest_event_ms: int | None) -> int:
        """``update``'s copy of the columns into ``row``; returns the earliest event time
        known for ``first_seen`` (``NEVER_MS``: none)."""
        arrays = self._arrays
        last, attributes = customer.last, customer.profile
        earliest = NEVER_MS
        for signal in self.spec.signals:
            attrs = last.get(signal)
            at = attrs.get("_at") if attrs is not None else None
            if isinstance(at, int) and not isinstance(at, bool):
                arrays[f"seen:{signal}"][row] = at
                earliest = at if earliest == NEVER_MS else min(earliest, at)
        for num in self.spec.numeric:
            if num.signal is None and not profile:
                continue
            source = attributes if num.signal is None else last.get(num.signal) or {}
            value = source.get(num.source_attribute)
            number = isinstance(value, int | float) and not isinstance(value, bool)
            arrays[f"num:{num.name}"][row] = value if number else np.nan
        if profile:
            for cat in self.spec.categorical:
                text = normalize_value(attributes.get(cat.source_attribute), cat.normalize)
                self._set_code(cat.name, row, text)
            for col in self.spec.sets:
                arrays[f"set:{col.name}"][row] = self._mask_of(col.name, _set_items(
                    attributes.get(col.source_attribute)), learn=True)
        if earliest_event_ms is not None:
            return earliest_event_ms if earliest == NEVER_MS else min(earliest,
                                                                      earliest_event_ms)
        if earliest == NEVER_MS:
            for attrs in last.values():
                at = attrs.get("_at")
                if isinstance(at, int) and not isinstance(at, bool):
                    earliest = at if earliest == NEVER_MS else min(earliest, at)
        return earliest

    def set_contact(self, customer_id: str, at_ms: int) -> None:
        """Record a contact (a treatment sent) at ``at_ms``; keeps the latest."""
        row = self.ensure(customer_id)
        contact = self._arrays["contact"]
        if at_ms > contact[row]:
            contact[row] = at_ms

    def _set_code(self, name: str, row: int, text: str | None) -> None:
        code = 0 if text is None else self._vocab[name].code(text)
        key = f"cat:{name}"
        array = self._arrays[key]
        if code > _CODE_MAX[array.dtype]:
            wider = next(t for t in _CODE_TYPES if np.iinfo(t).max >= code)
            array = self._arrays[key] = array.astype(wider)
        array[row] = code

    def _mask_of(self, name: str, items: Iterable[str], *, learn: bool) -> int:
        vocab, mask = self._bits[name], 0
        for item in items:
            bit = vocab.codes.get(item)
            if bit is None and learn:
                if len(vocab.codes) >= MAX_SET_VALUES:
                    if len(self.overflow[name]) < 1000:
                        self.overflow[name].add(item)
                    continue
                bit = vocab.code(item)
            if bit is not None:
                mask |= 1 << (bit - 1)
        return mask

    # -- reading columns (views of the rows in use) ----------------------------------------
    def _column(self, key: str, what: str) -> npt.NDArray[Any]:
        array = self._arrays.get(key)
        if array is None:
            raise ConfigError(f"hot columns keep no {what}", field=key.partition(":")[2])
        return array[:self._size]

    def last_seen(self, signal: str) -> npt.NDArray[np.int64]:
        return self._column(f"seen:{signal}", f"last-seen time of signal {signal!r}")

    def numeric(self, name: str) -> npt.NDArray[np.float64]:
        return self._column(f"num:{name}", f"numeric field {name!r}")

    def codes(self, name: str) -> npt.NDArray[np.unsignedinteger[Any]]:
        return self._column(f"cat:{name}", f"categorical field {name!r}")

    def set_masks(self, name: str) -> npt.NDArray[np.uint64]:
        return self._column(f"set:{name}", f"set field {name!r}")

    @property
    def last_contact(self) -> npt.NDArray[np.int64]:
        return self._arrays["contact"][:self._size]

    @property
    def first_seen(self) -> npt.NDArray[np.int64]:
        return self._arrays["first_seen"][:self._size]

    @property
    def alive(self) -> npt.NDArray[np.bool_]:
        return self._arrays["alive"][:self._size]

    def set_codes(self, name: str, rows: npt.NDArray[np.integer[Any]],
                  values: Iterable[Any]) -> None:
        """Bulk-assign categorical values (normalized like ``update``) to ``rows``."""
        how = self._normalize(name)
        values = list(values)
        if len(values) != len(rows):
            raise ValueError(f"{len(rows)} rows but {len(values)} values")
        table: dict[Any, int] = {}
        for value in dict.fromkeys(values):  # each distinct value normalized once
            text = normalize_value(value, how)
            table[value] = 0 if text is None else self._vocab[name].code(text)
        top = max(table.values(), default=0)
        key = f"cat:{name}"
        if top > np.iinfo(self._arrays[key].dtype).max:
            wider = next(t for t in _CODE_TYPES if np.iinfo(t).max >= top)
            self._arrays[key] = self._arrays[key].astype(wider)
        codes = np.fromiter((table[v] for v in values), np.int64, len(values))
        self._arrays[key][rows] = codes

    def set_items(self, name: str, rows: npt.NDArray[np.integer[Any]],
                  items: Iterable[Iterable[str]]) -> None:
        """Bulk-assign set values (lists of strings) to ``rows``."""
        if name not in self._bits:
            raise ConfigError("not a set column", field=name)
        masks = [self._mask_of(name, list(held), learn=True) for held in items]
        self._arrays[f"set:{name}"][rows] = np.array(masks, np.uint64)

    def vocabulary(self, name: str) -> list[str | None]:
        """Values of a categorical or set column by code (index 0: unknown / unused)."""
        vocab = self._vocab.get(name) or self._bits.get(name)
        if vocab is None:
            raise ConfigError("not a categorical or set column", field=name)
        return list(vocab.values)

    def code_lookup(self, name: str, values: Iterable[Any]) -> npt.NDArray[np.bool_]:
        """A table ``t`` with ``t[code]`` True for the codes of ``values`` (unknown: none)."""
        spec = next((c for c in self.spec.categorical if c.name == name), None)
        if spec is None:
            raise ConfigError("not a categorical column", field=name)
        vocab = self._vocab[name]
        table = np.zeros(len(vocab.values), np.bool_)
        for value in values:
            code = vocab.codes.get(normalize_value(value, spec.normalize) or "")
            if code is not None:
                table[code] = True
        return table

    def bits_for(self, name: str, values: Iterable[str]) -> tuple[int, bool]:
        """(mask of the known values, whether every value is known) for a set column."""
        if name not in self._bits:
            raise ConfigError("not a set column", field=name)
        values = list(values)
        lost = [v for v in values if v in self.overflow[name]]
        if lost:
            raise ConfigError(f"value {lost[0]!r} overflowed the {MAX_SET_VALUES}-value set "
                              "column: it cannot be selected on", field=name)
        mask = self._mask_of(name, values, learn=False)
        return mask, all(v in self._bits[name].codes for v in values)

    # -- memory ----------------------------------------------------------------------------
    def column_bytes_per_customer(self) -> int:
        return sum(a.itemsize for a in self._arrays.values())

    def nbytes(self) -> int:
        """Bytes of the column arrays (at capacity)."""
        return sum(a.nbytes for a in self._arrays.values())

    def index_bytes(self) -> int:
        """Approximate bytes of the id index (dict, row list, id strings, row ints)."""
        strings = sum(sys.getsizeof(cid) for cid in self._rows)
        ints = sum(sys.getsizeof(r) for r in self._rows.values() if r > 256)
        return sys.getsizeof(self._rows) + sys.getsizeof(self._ids) + strings + ints

    # -- snapshots -------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        n = self._size
        packed: bytes = msgpack.packb({
            "v": SNAPSHOT_VERSION, "k": "hot_columns", "spec": self.spec.model_dump(mode="json"),
            "ids": self._ids,
            "arrays": {k: [a.dtype.str, a[:n].tobytes()] for k, a in self._arrays.items()},
            "vocab": {k: v.values[1:] for k, v in self._vocab.items()},
            "bits": {k: v.values[1:] for k, v in self._bits.items()},
        }, use_bin_type=True)
        return packed

    @classmethod
    def from_bytes(cls, data: bytes, spec: HotColumnsSpec | None = None) -> HotColumns:
        """Restore a snapshot, under its own spec or a new one (shared columns are kept)."""
        try:
            env = msgpack.unpackb(data, raw=False)
            if env.get("v") != SNAPSHOT_VERSION or env.get("k") != "hot_columns":
                raise CodecError(f"not a hot-columns snapshot of version {SNAPSHOT_VERSION}")
            old_spec = HotColumnsSpec.model_validate(env["spec"])
            ids: list[str | None] = list(env["ids"])
            arrays = {k: np.frombuffer(raw, np.dtype(dt)) for k, (dt, raw) in
                      env["arrays"].items()}
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise CodecError(f"undecodable hot-columns snapshot: {exc}") from exc
        spec = spec or old_spec
        same_normalize = {c.name: c.normalize for c in old_spec.categorical}
        cols = cls(spec, capacity=len(ids))
        cols._ids = ids
        cols._rows = {cid: row for row, cid in enumerate(ids) if cid is not None}
        cols._size = len(ids)
        for name, values in env["vocab"].items():
            if name in cols._vocab and same_normalize.get(name) == cols._normalize(name):
                cols._vocab[name] = _Vocabulary(values)
        for name, values in env["bits"].items():
            if name in cols._bits:
                cols._bits[name] = _Vocabulary(values)
        for key, array in arrays.items():
            target = cols._arrays.get(key)
            if target is None or len(array) != len(ids):
                continue
            if key.startswith("cat:") and key[4:] not in env["vocab"]:
                continue
            if key.startswith("cat:") and cols._vocab[key[4:]].values[1:] != env["vocab"][key[4:]]:
                continue  # normalization changed: codes would not mean the same values
            if target.dtype != array.dtype:
                target = cols._arrays[key] = target.astype(array.dtype)
            target[:len(ids)] = array
        return cols

    def _normalize(self, name: str) -> Normalize:
        return next(c.normalize for c in self.spec.categorical if c.name == name)


def spec_from_mapping(data: Mapping[str, Any]) -> HotColumnsSpec:
    """Validate a plain mapping (YAML) into a spec; raises ``ConfigError`` naming the field."""
    try:
        return HotColumnsSpec.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        raise ConfigError(error["msg"], source="hot_columns",
                          field=".".join(str(p) for p in error["loc"])) from exc
