"""The safe policy expression language.

A condition such as ``profile.age >= 18 and days_since(state.last_contact_ms) > 7`` is parsed
with :mod:`ast` (``mode="eval"``), checked against a whitelist, and turned once into a tree of
small closures; evaluating it calls those closures. User text never reaches ``eval``, ``exec``
or ``compile``, and the real attributes of objects are never read.

Grammar (a subset of Python)::

    expr    := literal | ROOT | expr "." NAME | expr "[" expr "]" | FUNC "(" expr, ... ")"
             | expr BINOP expr | ("-" | "+" | "not") expr | expr ("and" | "or") expr
             | expr (CMPOP expr)+ | expr "if" expr "else" expr
    literal := number | string | True | False | None | [expr, ...] | (expr, ...) | {expr, ...}
    BINOP   := + - * / %                 CMPOP := == != < <= > >= in, not in
    ROOT    := a name in ``allowed_roots`` (default: profile, state, moments, now_ms,
               customer_id, context)
    FUNC    := days_since years_since min max abs len round lower coalesce

Semantics:

* ``a.b`` and ``a["b"]`` look ``b`` up in the mapping ``a``; a missing key, or ``a`` being None,
  gives None. ``a[i]`` with an int indexes a list, tuple or string (None when out of range).
* An ordering comparison (``< <= > >=``) with None on either side is False. ``x in None`` is
  False and ``x not in None`` is True: a missing collection is empty.
* Functions pass None through (``len(None)`` is None); ``min``/``max`` ignore None arguments
  (one list argument is taken as the values); ``coalesce`` returns its first non-None argument.
* ``days_since(t)`` / ``years_since(t)``: time from ``t`` (int/float ms since the epoch, an
  ISO-8601 string, a date or a datetime; naive times are UTC) to the namespace's ``now_ms``.
  ``years_since`` counts calendar years, so it is exactly 18.0 on an 18th birthday.
* Any other runtime failure (``"a" - 1``, division by zero, ``"%d" % x``, a repetition longer
  than ``MAX_SEQUENCE_ITEMS``) raises ``ExpressionError`` carrying the expression text.
"""

from __future__ import annotations

import ast
import operator
import warnings
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final, NamedTuple, NoReturn

from ..engine.errors import ExpressionError

__all__ = [
    "DEFAULT_ROOTS", "FUNCTION_NAMES", "MAX_DEPTH", "MAX_SEQUENCE_ITEMS", "MAX_SOURCE_CHARS",
    "Expression", "compile_expression", "evaluate_bool",
]

Namespace = Mapping[str, Any]
_Eval = Callable[[Namespace], Any]
_Op = Callable[..., Any]

DEFAULT_ROOTS = frozenset({"profile", "state", "moments", "now_ms", "customer_id", "context"})
MAX_SOURCE_CHARS: Final = 2000
MAX_DEPTH: Final = 50
MAX_SEQUENCE_ITEMS: Final = 10_000

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)
_MS_PER_DAY: Final = 86_400_000
_SCALARS: Final = (int, float, str, bool, type(None))


def _lookup(obj: Any, key: Any) -> Any:
    if type(obj) is dict or isinstance(obj, Mapping):
        return obj.get(key)
    if obj is None:
        return None
    if isinstance(obj, list | tuple | str) and type(key) is int:
        try:
            return obj[key]
        except IndexError:
            return None
    raise ExpressionError(f"cannot look up {key!r} in a value of type {type(obj).__name__}")


def _mul(a: Any, b: Any) -> Any:
    for seq, times in ((a, b), (b, a)):
        if isinstance(seq, str | list | tuple) and isinstance(times, int):
            if len(seq) * times > MAX_SEQUENCE_ITEMS:
                raise ExpressionError(f"repetition would exceed {MAX_SEQUENCE_ITEMS} items")
    return a * b


def _mod(a: Any, b: Any) -> Any:
    if isinstance(a, str | bytes):
        raise ExpressionError("string formatting with '%' is not allowed")
    return a % b


class _Members(frozenset[Any]):
    """The items of a literal collection of scalars, hashed once for fast ``in``."""

    def __contains__(self, item: object) -> bool:
        try:
            return super().__contains__(item)
        except TypeError:  # an unhashable value equals no scalar
            return False


def _now_ms(ns: Namespace) -> float:
    now = ns.get("now_ms")
    if isinstance(now, bool) or not isinstance(now, int | float):
        raise ExpressionError("now_ms is missing from the namespace or not a number")
    return now


def _to_datetime(value: object) -> datetime:
    if isinstance(value, bool):
        raise ExpressionError("expected a time, got bool")
    if isinstance(value, int | float):
        return _EPOCH + timedelta(milliseconds=value)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ExpressionError(f"{value!r} is not an ISO-8601 time") from None
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    raise ExpressionError(f"expected a time, got {type(value).__name__}")


def _days_since(ns: Namespace, t: Any) -> float | None:
    if t is None:
        return None
    is_ms = isinstance(t, int | float) and not isinstance(t, bool)
    t_ms: float = t if is_ms else (_to_datetime(t) - _EPOCH) / _ONE_MS
    return (_now_ms(ns) - t_ms) / _MS_PER_DAY


def _shift_years(moment: datetime, years: int) -> datetime:
    try:
        return moment.replace(year=moment.year + years)
    except ValueError:  # 29 February in a year that has none
        return moment.replace(year=moment.year + years, day=28)


def _years_since(ns: Namespace, t: Any) -> float | None:
    if t is None:
        return None
    start = _to_datetime(t)
    end = _EPOCH + timedelta(milliseconds=_now_ms(ns))
    whole = end.year - start.year
    anchor = _shift_years(start, whole)
    if anchor > end:
        whole -= 1
        anchor = _shift_years(start, whole)
    return whole + (end - anchor) / (_shift_years(start, whole + 1) - anchor)


def _extreme(pick: Callable[[list[Any]], Any]) -> Callable[..., Any]:
    def impl(ns: Namespace, *args: Any) -> Any:
        many = len(args) == 1 and isinstance(args[0], list | tuple | set | frozenset)
        present = [v for v in (args[0] if many else args) if v is not None]
        return pick(present) if present else None
    return impl


def _lower(ns: Namespace, s: Any) -> str | None:
    if s is not None and not isinstance(s, str):
        raise ExpressionError(f"lower() expects a string, got {type(s).__name__}")
    return None if s is None else s.lower()


class _Function(NamedTuple):
    impl: Callable[..., Any]
    min_args: int
    max_args: int | None
    reads_now: bool = False


_FUNCTIONS: Final[Mapping[str, _Function]] = {
    "days_since": _Function(_days_since, 1, 1, reads_now=True),
    "years_since": _Function(_years_since, 1, 1, reads_now=True),
    "min": _Function(_extreme(min), 1, None),
    "max": _Function(_extreme(max), 1, None),
    "abs": _Function(lambda ns, x: None if x is None else abs(x), 1, 1),
    "len": _Function(lambda ns, x: None if x is None else len(x), 1, 1),
    "round": _Function(lambda ns, x, n=None: None if x is None else round(x, n), 1, 2),
    "lower": _Function(_lower, 1, 1),
    "coalesce": _Function(lambda ns, *args: next((a for a in args if a is not None), None),
                          1, None),
}
FUNCTION_NAMES: Final = frozenset(_FUNCTIONS)

_BINARY: Final[Mapping[type[ast.operator], Callable[[Any, Any], Any]]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: _mul,
    ast.Div: operator.truediv, ast.Mod: _mod,
}
_SYMBOLS: Final[Mapping[type[ast.AST], str]] = {
    ast.Pow: "**", ast.FloorDiv: "//", ast.MatMult: "@", ast.LShift: "<<", ast.RShift: ">>",
    ast.BitOr: "|", ast.BitXor: "^", ast.BitAnd: "&", ast.Invert: "~", ast.Is: "is",
    ast.IsNot: "is not",
}
_COMPARE: Final[Mapping[type[ast.cmpop], Callable[[Any, Any], Any]]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne,
    ast.Lt: lambda a, b: a is not None and b is not None and a < b,
    ast.LtE: lambda a, b: a is not None and b is not None and a <= b,
    ast.Gt: lambda a, b: a is not None and b is not None and a > b,
    ast.GtE: lambda a, b: a is not None and b is not None and a >= b,
    ast.In: lambda item, coll: False if coll is None else item in coll,
    ast.NotIn: lambda item, coll: True if coll is None else item not in coll,
}
_UNARY: Final[Mapping[type[ast.unaryop], Callable[[Any], Any]]] = {
    ast.Not: operator.not_, ast.USub: operator.neg, ast.UAdd: operator.pos,
}
_REJECTED: Final[Mapping[type[ast.AST], str]] = {
    ast.Lambda: "lambda expressions", ast.ListComp: "comprehensions", ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions", ast.GeneratorExp: "comprehensions", ast.JoinedStr: "f-strings",
    ast.NamedExpr: "assignment expressions (:=)", ast.Starred: "starred arguments",
    ast.Dict: "dict literals", ast.Slice: "slices", ast.Await: "await", ast.Yield: "yield",
    ast.YieldFrom: "yield",
}


def _is_pure(node: ast.AST) -> bool:
    """True when ``node`` reads nothing from the namespace, so it can be computed once."""
    callees = {id(sub.func) for sub in ast.walk(node) if isinstance(sub, ast.Call)}
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and id(sub) not in callees:
            return False
        if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name):
            spec = _FUNCTIONS.get(sub.func.id)
            if spec is None or spec.reads_now:
                return False
    return True


class _Compiler:
    def __init__(self, source: str, allowed_roots: frozenset[str]) -> None:
        self.source = source
        self.allowed_roots = allowed_roots
        self.roots: set[str] = set()

    def fail(self, reason: str) -> NoReturn:
        raise ExpressionError(reason, expression=self.source)

    def compile(self, node: ast.expr, depth: int) -> _Eval:
        if depth >= MAX_DEPTH:
            self.fail(f"expression nests deeper than {MAX_DEPTH} levels")
        fn = self._build(node, depth + 1)
        if not isinstance(node, ast.Constant | ast.Name) and _is_pure(node):
            try:
                value = fn({})
            except (ExpressionError, ArithmeticError, TypeError, ValueError):
                return fn  # keep the failure for evaluation time
            if isinstance(value, _SCALARS):
                return lambda ns: value
        return fn

    def _build(self, node: ast.expr, depth: int) -> _Eval:
        if isinstance(node, ast.Constant):
            value = node.value
            if not isinstance(value, _SCALARS):
                self.fail(f"{type(value).__name__} literals are not allowed")
            return lambda ns: value
        if isinstance(node, ast.Name):
            return self._name(node)
        if isinstance(node, ast.Attribute):
            if node.attr.startswith("_"):
                self.fail(f"attribute {node.attr!r} is not allowed (names starting with '_')")
            base, attr = self.compile(node.value, depth), node.attr
            return lambda ns: _lookup(base(ns), attr)
        if isinstance(node, ast.Subscript):
            if isinstance(node.slice, ast.Slice):
                self.fail("slices are not allowed")
            obj, key = self.compile(node.value, depth), self.compile(node.slice, depth)
            return lambda ns: _lookup(obj(ns), key(ns))
        if isinstance(node, ast.BinOp):
            op = self._operator(_BINARY, node.op)
            left, right = self.compile(node.left, depth), self.compile(node.right, depth)
            return lambda ns: op(left(ns), right(ns))
        if isinstance(node, ast.UnaryOp):
            unary, operand = self._operator(_UNARY, node.op), self.compile(node.operand, depth)
            return lambda ns: unary(operand(ns))
        if isinstance(node, ast.BoolOp):
            return self._boolean(node, depth)
        if isinstance(node, ast.Compare):
            return self._compare(node, depth)
        if isinstance(node, ast.IfExp):
            test, body = self.compile(node.test, depth), self.compile(node.body, depth)
            orelse = self.compile(node.orelse, depth)
            return lambda ns: body(ns) if test(ns) else orelse(ns)
        if isinstance(node, ast.Call):
            return self._call(node, depth)
        if isinstance(node, ast.List | ast.Tuple | ast.Set):
            items = [self.compile(e, depth) for e in node.elts]
            if isinstance(node, ast.List):
                return lambda ns: [fn(ns) for fn in items]
            if isinstance(node, ast.Tuple):
                return lambda ns: tuple([fn(ns) for fn in items])
            return lambda ns: {fn(ns) for fn in items}
        what = _REJECTED.get(type(node), f"{type(node).__name__} expressions")
        self.fail(f"{what} are not allowed")

    def _operator(self, table: Mapping[type[Any], _Op], op: ast.AST) -> _Op:
        fn = table.get(type(op))
        if fn is None:
            self.fail(f"operator {_SYMBOLS.get(type(op), type(op).__name__)!r} is not allowed")
        return fn

    def _name(self, node: ast.Name) -> _Eval:
        name = node.id
        if name not in self.allowed_roots:
            allowed = ", ".join(sorted(self.allowed_roots))
            self.fail(f"name {name!r} is not allowed (allowed: {allowed})")
        self.roots.add(name)
        return lambda ns: ns.get(name)

    def _boolean(self, node: ast.BoolOp, depth: int) -> _Eval:
        fns = [self.compile(v, depth) for v in node.values]
        stop_on_true = isinstance(node.op, ast.Or)

        def boolean(ns: Namespace) -> Any:
            value: Any = None
            for fn in fns:
                value = fn(ns)
                if bool(value) is stop_on_true:
                    return value
            return value
        return boolean

    def _compare(self, node: ast.Compare, depth: int) -> _Eval:
        first = self.compile(node.left, depth)
        ops = [self._operator(_COMPARE, op) for op in node.ops]
        rights = [self._comparand(op, c, depth) for op, c in zip(node.ops, node.comparators,
                                                                strict=True)]
        if len(ops) == 1:
            op, right = ops[0], rights[0]
            return lambda ns: op(first(ns), right(ns))
        pairs = list(zip(ops, rights, strict=True))

        def chain(ns: Namespace) -> Any:
            left = first(ns)
            for op, fn in pairs:
                right = fn(ns)
                if not op(left, right):
                    return False
                left = right
            return True
        return chain

    def _comparand(self, op: ast.cmpop, node: ast.expr, depth: int) -> _Eval:
        fn = self.compile(node, depth)
        if isinstance(op, ast.In | ast.NotIn) and isinstance(node, ast.List | ast.Tuple | ast.Set):
            if _is_pure(node):
                try:
                    values = fn({})
                except (ExpressionError, ArithmeticError, TypeError, ValueError):
                    return fn
                if all(isinstance(v, _SCALARS) for v in values):
                    items = _Members(values)
                    return lambda ns: items
        return fn

    def _call(self, node: ast.Call, depth: int) -> _Eval:
        if not isinstance(node.func, ast.Name):
            if isinstance(node.func, ast.Attribute):
                self.fail(f"method calls are not allowed ('.{node.func.attr}(...)')")
            self.fail("only named functions can be called")
        name = node.func.id
        spec = _FUNCTIONS.get(name)
        if spec is None:
            self.fail(f"unknown function {name!r} (known: {', '.join(sorted(_FUNCTIONS))})")
        if node.keywords:
            self.fail(f"keyword arguments are not allowed (in call to {name}())")
        if any(isinstance(a, ast.Starred) for a in node.args):
            self.fail(f"starred arguments are not allowed (in call to {name}())")
        count = len(node.args)
        if count < spec.min_args or (spec.max_args is not None and count > spec.max_args):
            expected = (f"{spec.min_args}" if spec.max_args == spec.min_args else
                        f"{spec.min_args} or more" if spec.max_args is None else
                        f"{spec.min_args} to {spec.max_args}")
            self.fail(f"{name}() takes {expected} arguments, got {count}")
        if spec.reads_now:
            self.roots.add("now_ms")
        impl, args = spec.impl, [self.compile(a, depth) for a in node.args]
        if count == 1:
            arg = args[0]
            return lambda ns: impl(ns, arg(ns))
        return lambda ns: impl(ns, *[fn(ns) for fn in args])


class Expression:
    """A compiled, checked expression. Evaluate it with a namespace of the allowed roots."""

    __slots__ = ("_allowed_roots", "_fn", "_roots", "_source")

    def __init__(self, source: str, roots: frozenset[str], fn: _Eval,
                 allowed_roots: frozenset[str]) -> None:
        self._source = source
        self._roots = roots
        self._fn = fn
        self._allowed_roots = allowed_roots

    @property
    def source(self) -> str:
        return self._source

    @property
    def roots(self) -> frozenset[str]:
        """Root names read (plus ``now_ms`` when a time function is called)."""
        return self._roots

    def evaluate(self, namespace: Namespace) -> Any:
        try:
            return self._fn(namespace)
        except ExpressionError as err:
            raise ExpressionError(err.reason, expression=self._source) from None
        except ZeroDivisionError:
            raise ExpressionError("division by zero", expression=self._source) from None
        except (ArithmeticError, TypeError, ValueError) as err:
            reason = f"{type(err).__name__}: {err}"
            raise ExpressionError(reason, expression=self._source) from err

    def __repr__(self) -> str:
        return f"Expression({self._source!r})"

    def __reduce__(self) -> tuple[Callable[..., Expression], tuple[str, frozenset[str]]]:
        return _recompile, (self._source, self._allowed_roots)


def _recompile(source: str, allowed_roots: frozenset[str]) -> Expression:
    return compile_expression(source, allowed_roots=allowed_roots)


def compile_expression(source: str, *, allowed_roots: frozenset[str] = DEFAULT_ROOTS) -> Expression:
    """Parse and check ``source``; raise ExpressionError naming what is not allowed."""
    if not isinstance(source, str):
        raise ExpressionError(f"an expression must be a string, got {type(source).__name__}")
    if len(source) > MAX_SOURCE_CHARS:
        raise ExpressionError(f"expression is {len(source)} characters long "
                              f"(limit {MAX_SOURCE_CHARS})", expression=source[:60] + "...")
    stripped = source.strip()
    indent = len(source) - len(source.lstrip())
    try:
        with warnings.catch_warnings():  # e.g. "1if x" parses with a SyntaxWarning: no noise
            warnings.simplefilter("ignore", SyntaxWarning)
            tree = ast.parse(stripped, mode="eval")
    except SyntaxError as err:
        line, column = err.lineno or 1, err.offset or 0
        if column <= 0:  # the parser ran off the end of the text
            raise ExpressionError("syntax error: unexpected end of expression",
                                  expression=source) from None
        where = f"line {line}, column {column}" if line > 1 else f"column {column + indent}"
        raise ExpressionError(f"syntax error at {where}: {err.msg}", expression=source) from None
    except ValueError as err:  # null bytes
        raise ExpressionError(f"syntax error: {err}", expression=source) from None
    except (RecursionError, MemoryError):
        raise ExpressionError(f"expression nests deeper than {MAX_DEPTH} levels",
                              expression=source) from None
    compiler = _Compiler(source, allowed_roots)
    fn = compiler.compile(tree.body, 0)
    return Expression(source, frozenset(compiler.roots), fn, allowed_roots)


def evaluate_bool(expr: Expression, namespace: Namespace) -> bool:
    """Evaluate ``expr`` and return its truth value."""
    return bool(expr.evaluate(namespace))
