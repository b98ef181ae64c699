"""Codecs for message payloads: raw bytes, a serializer by name, or your own object."""

from __future__ import annotations

from typing import Any, Protocol, TypeAlias, runtime_checkable

from ._exceptions import InvalidArgument, SerializationError
from ._serializers import Serializer, resolve_serializer

__all__ = ["Codec", "CodecLike", "WireCodec", "resolve_codec"]


@runtime_checkable
class Codec(Protocol):
    """What the consumers need to turn a payload into bytes and back.

    ``encode`` must raise :class:`SerializationError` (or ``TypeError``/``ValueError``)
    for a value it cannot encode; ``decode`` may raise anything for bytes it cannot
    read, and the consumer then counts a decode error instead of calling the handler.
    """

    def encode(self, value: Any) -> bytes:
        """Encode *value* for the wire."""
        ...

    def decode(self, data: bytes) -> Any:
        """Decode bytes that :meth:`encode` produced."""
        ...


CodecLike: TypeAlias = "Codec | Serializer | str | None"
"""``None`` (bytes as they are), a serializer name such as ``"json"``, or an object."""


class _Raw:
    """No codec: payloads are bytes on the way in, bytes/str/int/float on the way out."""

    def encode(self, value: Any) -> bytes | str | int | float:
        if isinstance(value, bool) or not isinstance(value, (bytes, str, int, float)):
            raise SerializationError(
                f"without a codec a message must be bytes, str, int or float, "
                f"not {type(value).__name__}; pass codec='json' to send objects"
            )
        return value

    def decode(self, data: bytes) -> Any:
        return data


class _FromSerializer:
    """Adapts a dumps/loads serializer (the cache's) to encode/decode."""

    def __init__(self, serializer: Serializer) -> None:
        self._serializer = serializer

    def encode(self, value: Any) -> bytes:
        return self._serializer.dumps(value)

    def decode(self, data: bytes) -> Any:
        return self._serializer.loads(data)


class _Checked:
    """Wraps a user codec so an encoding failure is always a SerializationError."""

    def __init__(self, codec: Codec) -> None:
        self._codec = codec

    def encode(self, value: Any) -> bytes | str:
        try:
            encoded = self._codec.encode(value)
        except SerializationError:
            raise
        except (TypeError, ValueError) as exc:
            raise SerializationError(f"codec cannot encode {type(value).__name__}: {exc}") from exc
        if not isinstance(encoded, (bytes, str)):
            raise SerializationError(
                f"codec.encode must return bytes or str, not {type(encoded).__name__}"
            )
        return encoded

    def decode(self, data: bytes) -> Any:
        return self._codec.decode(data)


class WireCodec(Protocol):
    """The resolved form every consumer uses internally."""

    def encode(self, value: Any) -> bytes | str | int | float: ...

    def decode(self, data: bytes) -> Any: ...


def resolve_codec(codec: Any) -> WireCodec:
    """The codec for *codec*: ``None``, a serializer name, a Codec or a Serializer.

    Raises:
        InvalidArgument: an unknown name, a class instead of an instance, or an object
            with neither ``encode``/``decode`` nor ``dumps``/``loads``.
    """
    if codec is None:
        return _Raw()
    if isinstance(codec, str):
        return _FromSerializer(resolve_serializer(codec))
    if isinstance(codec, type):
        # A class has encode/decode (or dumps/loads) too, as functions waiting for self.
        raise InvalidArgument(f"codec must be an instance, e.g. {codec.__name__}(), not the class")
    if isinstance(codec, Codec):
        return _Checked(codec)
    if isinstance(codec, Serializer):
        return _FromSerializer(codec)
    raise InvalidArgument(
        "codec must be None, a name such as 'json', or an object with encode() and "
        f"decode(), not {type(codec).__name__}"
    )
