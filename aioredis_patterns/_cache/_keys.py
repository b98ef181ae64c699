"""Deterministic cache keys for ``@cache.cached``, derived from a call's arguments.

The default key of ``async def get_user(user_id, *, full=False)`` called as
``get_user(42)`` is ``myapp.users.get_user:[42,false]``: the function's module and
qualified name, then its arguments as compact JSON in signature order, after
defaults are applied. So ``get_user(42)``, ``get_user(user_id=42)`` and
``get_user(42, full=False)`` share one entry, in every process and every run.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import hashlib
import inspect
import json
import uuid
from collections.abc import Callable
from typing import Any

from .._exceptions import InvalidArgument
from .._slots import has_hash_tag

__all__ = ["KeyBuilder", "key_builder"]

KeyBuilder = Callable[..., str]
"""Called with a decorated function's arguments; returns its cache key (no namespace)."""

MAX_ARGS_TEXT = 200
"""Argument text longer than this is replaced by its SHA-256, so keys stay short (as is
text whose braces make no cluster hash tag, such as an empty ``{}``)."""


_PLAIN = frozenset({str, int, float, bool, type(None)})
"""Types whose JSON spelling is their key spelling, exactly these (not subclasses)."""

_TAGGED: tuple[tuple[type, str, Callable[[Any], str]], ...] = (
    # datetime before date: a datetime is a date.
    (datetime.datetime, "datetime", lambda v: v.isoformat()),
    (datetime.date, "date", lambda v: v.isoformat()),
    (datetime.time, "time", lambda v: v.isoformat()),
    (uuid.UUID, "uuid", str),
    (decimal.Decimal, "decimal", str),
    (bytes, "bytes", bytes.hex),
)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=True)


def _type_name(cls: type) -> str:
    return _json(f"{cls.__module__}.{cls.__qualname__}")


def _encode(value: Any) -> str:
    """The key text of *value*: compact JSON for JSON values, a tagged spelling otherwise.

    JSON values (str, int, float, bool, None, lists, dicts with str keys) are written
    as compact JSON with sorted keys. Every other type is written as ``tag(...)``
    (``tuple(1,2)``, ``set(1,2)``, ``bytes("00ff")``, ``date("2024-01-02")``), and a
    dict with a key that is not a str as ``{1:"a"}`` with its keys in this spelling.
    Neither is JSON, so distinct values of different types never share a text.
    """
    if type(value) in _PLAIN:
        return _json(value)
    if isinstance(value, enum.Enum):  # before str and int: an IntEnum is an int
        return f"enum({_type_name(type(value))},{_encode(value.value)})"
    if isinstance(value, (str, int, float)):  # subclasses equal their plain value
        return _json(value)
    if isinstance(value, list):
        return "[" + ",".join(map(_encode, value)) + "]"
    if isinstance(value, tuple):
        return "tuple(" + ",".join(map(_encode, value)) + ")"
    if isinstance(value, dict):
        if all(type(k) is str for k in value):  # JSON: sorted by the key itself
            items = [(_json(k), value[k]) for k in sorted(value)]
        else:
            items = sorted(((_encode(k), v) for k, v in value.items()), key=lambda kv: kv[0])
        return "{" + ",".join(f"{k}:{_encode(v)}" for k, v in items) + "}"
    if isinstance(value, (set, frozenset)):
        return "set(" + ",".join(sorted(map(_encode, value))) + ")"
    for cls, tag, spell in _TAGGED:
        if isinstance(value, cls):
            return f"{tag}({_json(spell(value))})"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return f"dataclass({_type_name(type(value))},{_encode(fields)})"
    # Anything else (including objects whose repr carries a memory address) has no
    # stable text across processes, so guessing one would split or merge entries.
    raise TypeError(f"no deterministic key for {type(value).__name__}")


def _dumps(values: list[Any]) -> str:
    if all(type(v) in _PLAIN for v in values):  # the common case, in one C call
        return json.dumps(values, separators=(",", ":"), ensure_ascii=False, allow_nan=True)
    return _encode(values)


def _skips_first(signature: inspect.Signature) -> bool:
    params = list(signature.parameters.values())
    return bool(params) and params[0].name in {"self", "cls"}


def key_builder(fn: Callable[..., Any], key: str | KeyBuilder | None) -> KeyBuilder:
    """The function that turns a call of *fn* into its cache key.

    Args:
        fn: the decorated function.
        key: ``None`` for the default derivation (module docstring); a format string
            such as ``"user:{user_id}"``, filled with the bound arguments (defaults
            applied, ``self`` included); or a callable taking the same arguments as
            *fn* and returning the key.

    Raises:
        InvalidArgument: *key* is neither ``None``, a non-empty ``str`` nor callable.
    """
    signature = inspect.signature(fn)
    if callable(key):
        custom: KeyBuilder = key
        return lambda *args, **kwargs: _checked(custom(*args, **kwargs), fn)
    if isinstance(key, str) and key:
        template = key

        def from_template(*args: Any, **kwargs: Any) -> str:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            return _checked(template.format(**bound.arguments), fn)

        return from_template
    if key is not None:
        raise InvalidArgument(f"key must be None, a format string or a callable, got {key!r}")

    prefix = f"{fn.__module__}.{fn.__qualname__}:"
    skip = 1 if _skips_first(signature) else 0
    star = next((p.name for p in signature.parameters.values() if p.kind is p.VAR_POSITIONAL), None)

    def derived(*args: Any, **kwargs: Any) -> str:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        if star is None:
            values = list(bound.arguments.values())[skip:]
        else:  # *args arrive as a tuple; they are written as a list, as they always were
            values = [list(v) if n == star else v for n, v in list(bound.arguments.items())[skip:]]
        try:
            text = _dumps(values)
        except (TypeError, ValueError, RecursionError) as exc:
            raise InvalidArgument(
                f"cannot derive a cache key for {fn.__qualname__}: {exc}; pass key= to cached()"
            ) from exc
        key = prefix + text
        # Braces that make no hash tag (an empty dict "{}", a "}" in a string) would
        # leave the cache no companion key in the key's cluster slot: hashed too.
        if len(text) > MAX_ARGS_TEXT or ("}" in key and not has_hash_tag(key)):
            return prefix + "sha256:" + hashlib.sha256(text.encode()).hexdigest()
        return key

    return derived


def _checked(value: object, fn: Callable[..., Any]) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidArgument(
            f"the key of {fn.__qualname__} must be a non-empty str, got {value!r}"
        )
    return value
