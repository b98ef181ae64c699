"""Hash-slot rules: every script's keys must live in one Redis Cluster slot."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from ._exceptions import CrossSlotKeys, InvalidArgument


def _encode(key: str | bytes) -> bytes:
    return key.encode() if isinstance(key, str) else key


def slot_of(key: str | bytes) -> int:
    """The cluster hash slot of *key*, honouring a ``{hash tag}``."""
    return key_slot(_encode(key))


def is_cluster(client: Any) -> bool:
    """True when *client* routes commands by hash slot (a Redis Cluster client)."""
    return isinstance(client, RedisCluster)


def check_same_slot(client: Any, keys: Sequence[str | bytes]) -> None:
    """Raise :class:`CrossSlotKeys` when *client* is a cluster client and *keys* span slots.

    On a single server any keys may be combined, so nothing is checked there and
    the seed's own key layouts keep working unchanged.
    """
    if len(keys) < 2 or not is_cluster(client):
        return
    first = slot_of(keys[0])
    if any(slot_of(k) != first for k in keys[1:]):
        raise CrossSlotKeys(keys)


def has_hash_tag(key: str) -> bool:
    """True when Redis Cluster hashes *key* by a ``{tag}``: a non-empty one, the first."""
    start = key.find("{")
    return start > -1 and key.find("}", start + 1) > start + 1


def derived_key(key: str, suffix: str) -> str:
    """A companion key for *key* that hashes to the same cluster slot.

    ``derived_key("lock:order:123", ":fence")`` is ``"{lock:order:123}:fence"``. A key
    that already carries a ``{hash tag}`` keeps it and just gets the suffix, so two
    keys sharing a tag never share a companion.

    Raises:
        InvalidArgument: *key* has a ``}`` but no non-empty tag (``"a{}b"``): Redis
            hashes it whole, and no key with a suffix can land in its slot.
    """
    if has_hash_tag(key):
        return key + suffix
    if "}" in key:
        raise InvalidArgument(
            f"key {key!r} has braces but no {{hash tag}}; companion keys cannot share its"
            " cluster slot. Use a key with a tag, e.g. '{user:1}:profile', or no braces"
        )
    return "{" + key + "}" + suffix
