"""A detector as the engine runs it: its validated settings on a slotted plain object.

A pydantic model defines ``__getattr__``, so CPython cannot specialize attribute reads on it:
every read of a detector's own field (``self.op``, ``self.value``, ``self.where``...) goes
through the hook, a few hundred instructions where a slot read takes a few, and a balance
update makes some thirty such reads across its detectors.

``runtime(spec)`` copies a validated spec's fields, and the private attributes it derived from
them at validation (a trend's bounds), onto an instance of a plain class with ``__slots__``,
made once per detector kind from the spec class's own functions (its classes up to
pydantic's ``BaseModel``). The engine thus runs exactly the methods the specs carry, the
ones the detector tests call, on plain attributes. Nested models (a sequence's steps) become
runtimes too, in a tuple. A runtime is read-only, pickles as its spec, and keeps the spec
(``runtime.spec``) for what reads the catalog rather than events. Methods that call
``super()`` (the load-time ``check``) work on specs only: the catalog checks specs.
"""

from __future__ import annotations

from types import FunctionType
from typing import Any, NoReturn, TypeVar

from pydantic import BaseModel

Spec = TypeVar("Spec", bound=BaseModel)

_CLASSES: dict[type[BaseModel], type] = {}


def runtime(spec: Spec) -> Spec:
    """``spec``'s settings on a slotted plain object with the same methods (typed as the
    spec's class, which it mirrors; ``isinstance`` against that class is false)."""
    cls = _CLASSES.get(type(spec)) or _runtime_class(type(spec))
    made: Spec = object.__new__(cls)
    set_slot = object.__setattr__
    set_slot(made, "spec", spec)
    for name in type(spec).model_fields:
        set_slot(made, name, _plain(getattr(spec, name)))
    for name in type(spec).__private_attributes__:
        set_slot(made, name, getattr(spec, name))
    return made


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return runtime(value)
    if isinstance(value, list) and any(isinstance(item, BaseModel) for item in value):
        return tuple(_plain(item) for item in value)
    return value


def _runtime_class(spec_class: type[BaseModel]) -> type:
    namespace: dict[str, Any] = {}
    for klass in reversed(spec_class.__mro__):  # base classes first: overrides win
        if not issubclass(klass, BaseModel) or klass is BaseModel:
            continue
        class_vars = getattr(klass, "__class_vars__", ())
        for name, value in vars(klass).items():
            if (isinstance(value, FunctionType) and not name.startswith("__")) or (
                    name in class_vars):
                namespace[name] = value
    namespace.update(
        __slots__=("spec", *spec_class.model_fields, *spec_class.__private_attributes__),
        __module__=spec_class.__module__,
        __qualname__=f"{spec_class.__qualname__}.Runtime",
        __doc__=f"{spec_class.__name__} as it runs (see ``{__name__}``).",
        __setattr__=_read_only,
        __delattr__=_read_only,
        __reduce__=_reduce,
        __repr__=_repr,
    )
    made = type(f"{spec_class.__name__}Runtime", (), namespace)
    _CLASSES[spec_class] = made
    return made


def _read_only(self: Any, name: str, *value: Any) -> NoReturn:
    raise AttributeError(f"{type(self).__name__} is read-only: cannot change {name!r}")


def _reduce(self: Any) -> tuple[Any, tuple[BaseModel]]:
    return runtime, (self.spec,)


def _repr(self: Any) -> str:
    return f"runtime({self.spec!r})"
