"""Catalogs: the declared signal types, detectors and actions, loaded from YAML and validated.

Several files merge into one ``Catalog`` (e.g. a bank and a retail catalog). Any error names the
file, the item and the field, and fails the load: an engine never starts on a half-valid catalog.
Cross-checks: detectors name known signal types and attributes of the right type; combinations
name known detectors without cycles; actions name moments that some detector makes and that are
not internal; files that both give ``settings`` agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .detectors import CombinationDetector, DetectorSpec
from .detectors.runtime import runtime
from .errors import CatalogError
from .models import Action
from .signals import signal_schemas

Category = Literal[
    "account status", "behavior-account", "behavior-device", "behavior-person", "calendar",
    "contract-account", "environmental", "forecast", "inactivity", "law/regulation", "milestone",
    "product/service", "product-wide/service-wide", "profile-person", "transaction status",
]
Touchpoint = Literal[
    "web", "mobile", "atm", "kiosk", "ivr", "iot", "billing", "order-system", "feed",
    "operator", "branch", "call-centre", "card-network", "core-banking", "network", "model",
]
AttributeType = Literal["number", "integer", "string", "boolean", "timestamp"]


class _Item(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AttributeSpec(_Item):
    type: AttributeType
    unit: str = ""
    required: bool = False
    description: str = ""


class SignalType(_Item):
    type: Annotated[str, Field(min_length=1, max_length=128)]
    category: Category
    source: Touchpoint
    half_life_s: float = Field(86_400.0, gt=0, description="How fast this information decays")
    attributes: dict[str, AttributeSpec] = Field(default_factory=dict)
    updates_profile: bool = Field(
        False, description="Attributes of this signal are merged into the customer's profile"
    )
    description: str = ""


class CatalogSettings(_Item):
    """Settings that hold for the whole merged catalog."""

    allowed_lateness_s: float = Field(
        3600.0, ge=0, description="How far behind a customer's latest event time an event may "
        "arrive and still count; later ones are rejected to the dead-letter record")
    max_moments_per_customer: int = Field(64, ge=1, le=10_000,
                                          description="Live moments kept per customer")

    @property
    def allowed_lateness_ms(self) -> int:
        return int(self.allowed_lateness_s * 1000)


class CatalogFile(_Item):
    """What one YAML file may hold."""

    settings: CatalogSettings | None = None
    signals: list[SignalType] = Field(default_factory=list)
    detectors: list[DetectorSpec] = Field(default_factory=list)
    actions: list[Action] = Field(default_factory=list)
    moments: list[str] = Field(
        default_factory=list, description="Moments no detector makes: injected by sweeps, "
        "emergency runs and feeds (e.g. hurricane_warning), so actions may name them")
    policies: dict[str, Any] | None = Field(
        None, description="Contact policy, consent, quiet hours, budgets...: validated by "
        "policies.policy_config (one file of a catalog may declare it)")


# A detector as the customer state runs it on each event of its signal type: (runtime, id,
# version, uses_timer). A plain tuple, not a NamedTuple: CPython unpacks an exact tuple in a
# few instructions and a tuple subclass through the iterator protocol.
DetectorStep = tuple[DetectorSpec, str, int, bool]


class Catalog:
    """The merged, cross-checked catalog the engine runs on."""

    def __init__(self, signals: Iterable[SignalType], detectors: Iterable[DetectorSpec],
                 actions: Iterable[Action], sources: Mapping[str, str] | None = None,
                 settings: CatalogSettings | None = None,
                 policies: Mapping[str, Any] | None = None) -> None:
        self.settings = settings or CatalogSettings()
        self.allowed_lateness_ms = self.settings.allowed_lateness_ms  # read on every event
        self.policies: dict[str, Any] = dict(policies or {})
        self.external_moments: list[str] = []
        self.signals: dict[str, SignalType] = {s.type: s for s in signals}
        self.detectors: dict[str, DetectorSpec] = {d.id: d for d in detectors}
        self.actions: dict[str, Action] = {a.id: a for a in actions}
        self.sources: dict[str, str] = dict(sources or {})  # 'section/id' -> file
        self.detectors_by_signal: dict[str, list[DetectorSpec]] = {}
        for spec in self.detectors.values():
            for signal_type in spec.signal_types():
                self.detectors_by_signal.setdefault(signal_type, []).append(spec)
        # Read for every event, so as plain values: an attribute of a pydantic model goes
        # through its __getattr__ hook, which keeps CPython from specializing the read
        self.profile_signals = frozenset(s.type for s in self.signals.values()
                                         if s.updates_profile)
        self.signal_schemas = signal_schemas(self.signals)  # what validation reads
        # and detectors run as runtimes: their settings on plain slots (see detectors.runtime)
        self.runtimes: dict[str, DetectorSpec] = {
            d.id: runtime(d) for d in self.detectors.values()}
        self.detector_steps: dict[str, tuple[DetectorStep, ...]] = {
            kind: tuple((self.runtimes[d.id], d.id, d.version, d.uses_timer) for d in specs)
            for kind, specs in self.detectors_by_signal.items()}
        self.combinations_by_member: dict[str, list[CombinationDetector]] = {}
        for spec in self.detectors.values():
            if isinstance(spec, CombinationDetector):
                for member in spec.members:
                    self.combinations_by_member.setdefault(member, []).append(
                        self.runtimes[spec.id])  # type: ignore[arg-type]
        self.internal_moments = {d.moment for d in self.detectors.values() if d.internal} - {
            d.moment for d in self.detectors.values() if not d.internal}
        self.actions_by_moment: dict[str, list[Action]] = {}
        for action in self.actions.values():
            for moment in action.moments:
                self.actions_by_moment.setdefault(moment, []).append(action)

    def to_wire(self) -> dict[str, Any]:
        """Plain data, to hand the same catalog to every actor."""
        return {
            "settings": self.settings.model_dump(mode="json"),
            "signals": [s.model_dump(mode="json") for s in self.signals.values()],
            "detectors": [d.model_dump(mode="json") for d in self.detectors.values()],
            "actions": [a.model_dump(mode="json") for a in self.actions.values()],
            "policies": self.policies,
            "moments": self.external_moments,
            "sources": self.sources,
        }

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> Catalog:
        body = {k: v for k, v in data.items() if k != "sources"}
        if not body.get("policies"):
            body.pop("policies", None)
        catalog = _merge([("<wire>", CatalogFile.model_validate(body))])
        catalog.sources = dict(data.get("sources", {}))
        return catalog


def _field_path(error: Mapping[str, Any]) -> str:
    return ".".join(str(part) for part in error["loc"])


def _parse_file(raw: Any, source: str) -> CatalogFile:
    if not isinstance(raw, dict):
        raise CatalogError("a catalog file must be a mapping with signals/detectors/actions",
                           file=source)
    try:
        return CatalogFile.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = first["loc"]
        item = None
        if len(loc) >= 2 and isinstance(loc[1], int):
            section = raw.get(str(loc[0])) or []
            entry = section[loc[1]] if loc[1] < len(section) else {}
            if isinstance(entry, dict):
                item = str(entry.get("id") or entry.get("type") or f"{loc[0]}[{loc[1]}]")
        raise CatalogError(first["msg"], file=source, item=item, field=_field_path(first)) from exc


def _merge_settings(files: list[tuple[str, CatalogFile]]) -> CatalogSettings:
    chosen: tuple[str, CatalogSettings] | None = None
    for name, part in files:
        if part.settings is None:
            continue
        if chosen is not None and part.settings != chosen[1]:
            differ = next(k for k in CatalogSettings.model_fields
                          if getattr(part.settings, k) != getattr(chosen[1], k))
            raise CatalogError(f"settings differ from those in {chosen[0]}", file=name,
                               item="settings", field=differ)
        chosen = (name, part.settings)
    return chosen[1] if chosen else CatalogSettings()


def _check_combinations(detectors: Mapping[str, DetectorSpec], sources: Mapping[str, str]) -> None:
    for d in detectors.values():
        if not isinstance(d, CombinationDetector):
            continue
        for i, member in enumerate(d.members):
            if member not in detectors:
                raise CatalogError(f"unknown member detector {member!r}",
                                   file=sources[f"detectors/{d.id}"], item=d.id,
                                   field=f"members.{i}")
    done: set[str] = set()

    def visit(ident: str, trail: tuple[str, ...]) -> None:
        if ident in trail:
            cycle = " -> ".join((*trail[trail.index(ident):], ident))
            raise CatalogError(f"combinations form a cycle: {cycle}",
                               file=sources[f"detectors/{ident}"], item=ident, field="members")
        spec = detectors[ident]
        if ident in done or not isinstance(spec, CombinationDetector):
            return
        for member in spec.members:
            visit(member, (*trail, ident))
        done.add(ident)

    for ident in detectors:
        visit(ident, ())


def _merge(files: list[tuple[str, CatalogFile]]) -> Catalog:
    signals: dict[str, SignalType] = {}
    detectors: dict[str, DetectorSpec] = {}
    actions: dict[str, Action] = {}
    sources: dict[str, str] = {}
    for name, part in files:
        sections: tuple[tuple[str, list[Any], str, dict[str, Any]], ...] = (
            ("signals", part.signals, "type", signals),
            ("detectors", part.detectors, "id", detectors),
            ("actions", part.actions, "id", actions))
        for section, items, key, table in sections:
            for item in items:
                ident = getattr(item, key)
                where = f"{section}/{ident}"
                if ident in table:
                    raise CatalogError(f"declared twice (also in {sources[where]})", file=name,
                                       item=ident, field=key)
                table[ident] = item
                sources[where] = name
    for d in detectors.values():
        d.check(signals, file=sources[f"detectors/{d.id}"])
    _check_combinations(detectors, sources)
    moments = {d.moment for d in detectors.values() if not d.internal}
    moments.update(m for _, part in files for m in part.moments)
    internal = {d.moment for d in detectors.values() if d.internal}
    for a in actions.values():
        for m in a.moments:
            if m not in moments:
                reason = (f"moment {m!r} is internal (it only feeds combinations)"
                          if m in internal else f"no detector produces moment {m!r}")
                raise CatalogError(reason, file=sources[f"actions/{a.id}"], item=a.id,
                                   field="moments")
    declared = [(name, part.policies) for name, part in files if part.policies is not None]
    if len(declared) > 1:
        raise CatalogError(f"policies are declared in {declared[0][0]} already",
                           file=declared[1][0], item="policies", field="policies")
    if declared:
        sources["policies"] = declared[0][0]
    catalog = Catalog(signals.values(), detectors.values(), actions.values(), sources,
                      _merge_settings(files), declared[0][1] if declared else None)
    catalog.external_moments = sorted({m for _, part in files for m in part.moments})
    return catalog


def load_catalog(paths: Iterable[Path | str]) -> Catalog:
    """Load and merge catalog files; raise ``CatalogError`` naming file, item and field."""
    parts: list[tuple[str, CatalogFile]] = []
    for path in paths:
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise CatalogError(f"cannot read: {exc.strerror}", file=str(path)) from exc
        except yaml.YAMLError as exc:
            raise CatalogError(f"not valid YAML: {exc}", file=str(path)) from exc
        parts.append((str(path), _parse_file(raw, str(path))))
    if not parts:
        raise CatalogError("no catalog file given")
    return _merge(parts)


BUNDLED_DIR = Path(__file__).resolve().parent.parent / "catalogs"


def bundled_catalog_path(name: str) -> Path:
    return BUNDLED_DIR / f"{name}.yaml"
