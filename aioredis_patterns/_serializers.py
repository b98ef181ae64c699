"""Serializers for AsyncCache: plain JSON by default, msgpack as an extra, pickle by name.

A serializer turns a Python value into the bytes stored at a Redis key and back.
``dumps`` must raise :class:`SerializationError` (a ``TypeError``) for a value it
cannot encode; ``loads`` may raise anything for bytes it cannot decode, and the
cache then treats the stored value as a miss.
"""

from __future__ import annotations

import importlib
import json
import pickle
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from ._exceptions import InvalidArgument, SerializationError

__all__ = [
    "JsonSerializer",
    "MsgpackSerializer",
    "PickleSerializer",
    "Serializer",
    "resolve_serializer",
]


@runtime_checkable
class Serializer(Protocol):
    """What AsyncCache needs from a serializer: two methods, bytes in and out.

    Implement it to store values in your own format (protobuf, a compressed JSON,
    a versioned schema). A stored ``None`` must encode to some bytes, so the cache
    can tell it apart from a missing key.
    """

    def dumps(self, value: Any) -> bytes:
        """Encode *value*.

        Raises:
            SerializationError: the value cannot be encoded; the cache then writes
                nothing.
        """
        ...

    def loads(self, data: bytes) -> Any:
        """Decode bytes that :meth:`dumps` wrote. Any exception marks them corrupt."""
        ...


class JsonSerializer:
    """Plain, compact UTF-8 JSON with no envelope: what other languages read as is.

    ``{"id": "42", "name": "Ann"}`` is stored as ``{"id":"42","name":"Ann"}``, the
    bytes Go's ``json.Marshal`` writes. JSON does not round-trip every Python value:
    tuples come back as lists and non-string dict keys as strings. NaN and the
    infinities are refused because they are not JSON.

    Args:
        default: called for objects ``json`` cannot encode (e.g. dataclasses); it
            returns something encodable or raises ``TypeError``.
        object_hook: called with every decoded JSON object (``dict``).
    """

    def __init__(
        self,
        *,
        default: Callable[[Any], Any] | None = None,
        object_hook: Callable[[dict[str, Any]], Any] | None = None,
    ) -> None:
        self._encoder = json.JSONEncoder(
            ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=default
        )
        self._decoder = json.JSONDecoder(object_hook=object_hook)

    def dumps(self, value: Any) -> bytes:
        """Encode *value* as compact JSON; raises :class:`SerializationError` if it is not JSON."""
        try:
            return self._encoder.encode(value).encode("utf-8")
        except (TypeError, ValueError, RecursionError) as exc:
            raise SerializationError(
                f"cannot encode {type(value).__name__} as JSON: {exc}"
            ) from exc

    def loads(self, data: bytes) -> Any:
        """Decode UTF-8 JSON bytes."""
        return self._decoder.decode(data.decode("utf-8"))

    def __repr__(self) -> str:
        return "JsonSerializer()"


class MsgpackSerializer:
    """MessagePack, smaller and faster than JSON; needs the ``msgpack`` extra.

    Install it with ``pip install 'aioredis_patterns[msgpack]'``. Strings and bytes
    stay distinct; tuples come back as lists. Dict keys of any scalar type (``int``,
    ``float``, ``None``) come back as they went in.

    Raises:
        ModuleNotFoundError: msgpack is not installed (raised when constructed).
    """

    def __init__(self) -> None:
        try:
            # Imported by name: msgpack is an optional extra and ships no type hints.
            msgpack = importlib.import_module("msgpack")
        except ModuleNotFoundError as exc:
            raise ModuleNotFoundError(
                "the msgpack serializer needs msgpack: pip install 'aioredis_patterns[msgpack]'",
                name="msgpack",
            ) from exc
        self._packb: Callable[..., bytes] = msgpack.packb
        self._unpackb: Callable[..., Any] = msgpack.unpackb

    def dumps(self, value: Any) -> bytes:
        """Encode *value*; raises :class:`SerializationError` for unsupported types."""
        try:
            return self._packb(value, use_bin_type=True)
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise SerializationError(
                f"cannot encode {type(value).__name__} as msgpack: {exc}"
            ) from exc

    def loads(self, data: bytes) -> Any:
        """Decode msgpack bytes."""
        # strict_map_key=False: msgpack's default refuses the non-str keys that dumps
        # writes ({1: "a"}), so such a value would be a miss on every read.
        return self._unpackb(data, raw=False, strict_map_key=False)

    def __repr__(self) -> str:
        return "MsgpackSerializer()"


class PickleSerializer:
    """Python pickle: stores almost any Python object, readable only by Python.

    Warning:
        Unsafe with untrusted data: unpickling runs code chosen by whoever wrote
        the bytes. Use it only when nothing but your own services can write to
        this Redis; anyone who
        can ``SET`` a cached key can then run code in every process that reads it.
    """

    def dumps(self, value: Any) -> bytes:
        """Pickle *value*; raises :class:`SerializationError` when it cannot be pickled."""
        try:
            return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError, RecursionError) as exc:
            raise SerializationError(f"cannot pickle {type(value).__name__}: {exc}") from exc

    def loads(self, data: bytes) -> Any:
        """Unpickle *data*. Runs code: see the class warning."""
        return pickle.loads(data)

    def __repr__(self) -> str:
        return "PickleSerializer()"


_BY_NAME: dict[str, Callable[[], Serializer]] = {
    "json": JsonSerializer,
    "msgpack": MsgpackSerializer,
    "pickle": PickleSerializer,
}


def resolve_serializer(serializer: str | Serializer) -> Serializer:
    """The serializer named ``"json"``, ``"msgpack"`` or ``"pickle"``, or *serializer* itself.

    Raises:
        InvalidArgument: an unknown name, a class instead of an instance, or an object
            without ``dumps``/``loads``.
        ModuleNotFoundError: ``"msgpack"`` without the msgpack package.
    """
    if isinstance(serializer, str):
        factory = _BY_NAME.get(serializer)
        if factory is None:
            names = ", ".join(repr(n) for n in _BY_NAME)
            raise InvalidArgument(f"unknown serializer {serializer!r}; choose one of {names}")
        return factory()
    if isinstance(serializer, type):
        # A class has dumps and loads too, as functions still waiting for self.
        raise InvalidArgument(
            f"serializer must be an instance, e.g. {serializer.__name__}(), not the class"
        )
    if not isinstance(serializer, Serializer):
        raise InvalidArgument(
            "serializer must be a name or have dumps() and loads(), "
            f"not {type(serializer).__name__}"
        )
    return serializer
