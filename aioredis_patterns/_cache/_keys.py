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

__all__ = ["KeyBuilder", "key_builder"]

KeyBuilder = Callable[..., str]
"""Called with a decorated function's arguments; returns its cache key (no namespace)."""

MAX_ARGS_TEXT = 200
"""Argument text longer than this is replaced by its SHA-256, so keys stay short."""


def _canonical(value: Any) -> Any:
    """JSON ``default`` hook: the values JSON lacks, each written one fixed way."""
    if isinstance(value, (set, frozenset)):
        return sorted(_dumps(item) for item in value)
    if isinstance(value, bytes):
        return "b:" + value.hex()
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (uuid.UUID, decimal.Decimal)):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [type(value).__qualname__, dataclasses.asdict(value)]
    # Anything else (including objects whose repr carries a memory address) has no
    # stable text across processes, so guessing one would split or merge entries.
    raise TypeError(f"no deterministic key for {type(value).__name__}")


def _dumps(value: Any) -> str:
    return json.dumps(
        value,
        default=_canonical,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=True,
    )


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

    def derived(*args: Any, **kwargs: Any) -> str:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        values = list(bound.arguments.values())[skip:]
        try:
            text = _dumps(values)
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(
                f"cannot derive a cache key for {fn.__qualname__}: {exc}; pass key= to cached()"
            ) from exc
        if len(text) > MAX_ARGS_TEXT:
            text = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
        return prefix + text

    return derived


def _checked(value: object, fn: Callable[..., Any]) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidArgument(
            f"the key of {fn.__qualname__} must be a non-empty str, got {value!r}"
        )
    return value
