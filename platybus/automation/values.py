"""Template values and what the ``${...}`` language does with them.

Safe lookups (mapping keys, list indexes, a message's declared fields), the
``Undefined`` value a failed lookup gives, how values render into strings, and
the operators and filters, each checking its operand types. The language itself
(tokens, parser, compiled closures) is in :mod:`platybus.automation.templates`.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Mapping
from typing import Any, Final, NamedTuple

import msgspec

from platybus.errors import TemplateError

MAX_STRING = 1_000_000
MAX_INT_BITS = 1024


class Undefined:
    """The value of a lookup that found nothing; says what was looked up."""

    __slots__ = ("what",)

    def __init__(self, what: str) -> None:
        self.what = what

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"Undefined({self.what!r})"

    def fail(self) -> TemplateError:
        """The error to raise where a value is needed."""
        return TemplateError(f"{self.what} is undefined (use '| default(...)' to give a "
                             "fallback)", expression=self.what)


MISSING: Final[Any] = object()
"""What :func:`lookup` gives when there is nothing at a key."""


def lookup(obj: Any, key: str | int) -> Any:
    """One safe lookup step: a mapping key, a list index, a message's declared field.

    Returns :data:`MISSING` when there is nothing there.
    """
    t = type(obj)
    value: Any = MISSING
    if t is dict:
        value = obj.get(key, MISSING)
    elif isinstance(obj, msgspec.Struct):
        cls = type(obj)
        # Declared fields only: getattr on any name would reach methods and dunders.
        if isinstance(key, str) and key in cls.__struct_fields__:
            value = getattr(obj, key)
            if value is msgspec.UNSET:
                value = MISSING
        elif key == "kind" and isinstance(getattr(cls, "kind", None), str):
            value = cls.kind  # type: ignore[attr-defined]
    elif isinstance(obj, list | tuple | str):
        if type(key) is int and -len(obj) <= key < len(obj):
            value = obj[key]
    elif isinstance(obj, Mapping):
        value = obj.get(key, MISSING)
    return value


def lookup_or_undefined(obj: Any, key: str | int, what: str) -> Any:
    if type(obj) is Undefined:
        return obj
    value = lookup(obj, key)
    return Undefined(what) if value is MISSING else value


def is_number(v: Any) -> bool:
    return (type(v) is int or type(v) is float) or (
        isinstance(v, int | float) and not isinstance(v, bool))


def type_name(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if is_number(v):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list | tuple):
        return "a list"
    if isinstance(v, Mapping | msgspec.Struct):
        return "a mapping"
    return type(v).__name__


def need(v: Any) -> Any:
    if type(v) is Undefined:
        raise v.fail()
    return v


def to_text(value: Any) -> str:
    """Render a value inside a string: JSON spellings for null, booleans, lists and maps."""
    t = type(value)
    if t is str:
        return value  # type: ignore[no-any-return]
    if t is Undefined:
        raise value.fail()
    if value is None:
        return "null"
    if t is bool:
        return "true" if value else "false"
    if t is int or t is float:
        return str(value)
    return msgspec.json.encode(value).decode()


def to_value(value: Any) -> Any:
    """Turn a rendered value into plain data (messages become mappings)."""
    if type(value) is Undefined:
        raise value.fail()
    if isinstance(value, msgspec.Struct):
        return msgspec.to_builtins(value)
    return value


# -- operators ------------------------------------------------------------------


def _add(a: Any, b: Any) -> Any:
    if is_number(a) and is_number(b):
        return check_int(a + b)
    if isinstance(a, str) and isinstance(b, str):
        if len(a) + len(b) > MAX_STRING:
            raise TemplateError(f"string longer than {MAX_STRING} characters")
        return a + b
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return [*a, *b]
    raise TemplateError(f"cannot add {type_name(a)} and {type_name(b)}")


def check_int(v: Any) -> Any:
    if type(v) is int and v.bit_length() > MAX_INT_BITS:
        raise TemplateError("number too large")
    return v


def _arith(name: str, fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def op(a: Any, b: Any) -> Any:
        if not (is_number(a) and is_number(b)):
            raise TemplateError(f"cannot apply {name!r} to {type_name(a)} and {type_name(b)}")
        try:
            return check_int(fn(a, b))
        except ZeroDivisionError:
            raise TemplateError("division by zero") from None
        except OverflowError:
            raise TemplateError("number too large") from None

    return op


def equal(a: Any, b: Any) -> bool:
    if type(a) is Undefined or type(b) is Undefined:
        return False
    if isinstance(a, bool) != isinstance(b, bool):
        return False  # true is not 1
    try:
        return bool(a == b)
    except Exception:
        return False


def _order(name: str, fn: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def op(a: Any, b: Any) -> bool:
        if (is_number(a) and is_number(b)) or (isinstance(a, str) and isinstance(b, str)):
            return fn(a, b)
        raise TemplateError(f"cannot compare {type_name(a)} {name} {type_name(b)}")

    return op


def _contains(a: Any, b: Any) -> bool:
    if isinstance(b, str):
        if not isinstance(a, str):
            raise TemplateError(f"'in' a string needs a string, got {type_name(a)}")
        return a in b
    if isinstance(b, list | tuple):
        return any(equal(a, item) for item in b)
    if isinstance(b, Mapping):
        return a in b if isinstance(a, str | int) else False
    raise TemplateError(f"'in' needs a string, list or mapping on the right, got {type_name(b)}")


BINARY: Final[dict[str, Callable[[Any, Any], Any]]] = {
    "+": _add,
    "-": _arith("-", lambda a, b: a - b),
    "*": _arith("*", lambda a, b: a * b),
    "/": _arith("/", lambda a, b: a / b),
    "//": _arith("//", lambda a, b: a // b),
    "%": _arith("%", lambda a, b: a % b),
    "==": equal,
    "!=": lambda a, b: not equal(a, b),
    "<": _order("<", lambda a, b: a < b),
    "<=": _order("<=", lambda a, b: a <= b),
    ">": _order(">", lambda a, b: a > b),
    ">=": _order(">=", lambda a, b: a >= b),
    "in": _contains,
    "not in": lambda a, b: not _contains(a, b),
}
LEVELS: Final = (("==", "!=", "<", "<=", ">", ">=", "in", "not in"), ("+", "-"),
                  ("*", "/", "//", "%"))

# -- filters --------------------------------------------------------------------


def _str_filter(name: str, fn: Callable[[str], Any]) -> Callable[..., Any]:
    def apply(value: Any) -> Any:
        if not isinstance(value, str):
            raise TemplateError(f"filter {name!r} needs a string, got {type_name(value)}")
        return fn(value)

    return apply


def _to_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TemplateError(f"filter 'int' cannot convert {type_name(value)}")
    try:
        return int(float(value)) if isinstance(value, str) and "." in value else int(value)
    except (ValueError, OverflowError):
        raise TemplateError(f"filter 'int': {value!r} is not a number") from None


def _to_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TemplateError(f"filter 'float' cannot convert {type_name(value)}")
    try:
        return float(value)
    except ValueError:
        raise TemplateError(f"filter 'float': {value!r} is not a number") from None


def _length(value: Any) -> int:
    if isinstance(value, str | list | tuple | Mapping):
        return len(value)
    raise TemplateError(f"filter 'length' needs a string, list or mapping, got "
                        f"{type_name(value)}")


def _json(value: Any) -> str:
    try:
        return msgspec.json.encode(value).decode()
    except (TypeError, ValueError) as error:
        raise TemplateError(f"filter 'json': {error}") from None


class Filter(NamedTuple):
    fn: Callable[..., Any]
    args: int


FILTERS: Final[dict[str, Filter]] = {
    "lower": Filter(_str_filter("lower", str.lower), 0),
    "upper": Filter(_str_filter("upper", str.upper), 0),
    "trim": Filter(_str_filter("trim", str.strip), 0),
    "basename": Filter(_str_filter("basename", posixpath.basename), 0),
    "dirname": Filter(_str_filter("dirname", posixpath.dirname), 0),
    "json": Filter(_json, 0),
    "int": Filter(_to_int, 0),
    "float": Filter(_to_float, 0),
    "string": Filter(to_text, 0),
    "length": Filter(_length, 0),
    "default": Filter(lambda value, fallback: fallback if value is None else value, 1),
}
