"""AtomicOps: the seed's Lua operations, validated, typed and idempotent on request."""

from __future__ import annotations

from typing import Any

from ._exceptions import InvalidArgument
from ._scripts import ScriptBook
from ._slots import derived_key
from ._validation import Duration, non_empty_str, positive_int, to_milliseconds

__all__ = ["AtomicOps"]


def _value(value: Any, name: str) -> str | bytes | int | float:
    if isinstance(value, bool) or not isinstance(value, (str, bytes, int, float)):
        raise InvalidArgument(
            f"{name} must be str, bytes, int or float, not {type(value).__name__}"
        )
    return value


class AtomicOps:
    """Atomic multi-step operations on plain Redis strings, one round trip each.

    Each operation is one Lua script: it checks, then writes, with nothing able to
    run in between. Every amount is checked here before the round trip (a positive
    ``int``; not a bool, float, NaN or string) and again in Lua before the first
    write, so nothing is ever half-applied.

    A missing counter counts as 0; a counter holding anything but an integer raises
    :class:`NotAnInteger`. On a Redis Cluster client, keys of one call must share a
    hash slot (use a ``{hash tag}``), else :class:`CrossSlotKeys` is raised before
    anything is sent.

    Args:
        client: a ``redis.asyncio`` client.
        scripts: the :class:`ScriptBook` to use; default, the client's shared book.
        idempotency_ttl: how long an idempotency record is kept (default one day).
            A retry with the same ``idempotency_key`` within that time returns the
            first call's result and changes nothing.
    """

    def __init__(
        self,
        client: Any,
        *,
        scripts: ScriptBook | None = None,
        idempotency_ttl: Duration = 86400.0,
    ) -> None:
        self._client = client
        self._book = scripts or ScriptBook.for_client(client)
        self._idempotency_ttl_ms = to_milliseconds(idempotency_ttl, "idempotency_ttl")

    def _record_key(self, key: str, idempotency_key: str | None) -> list[str]:
        if idempotency_key is None:
            return []
        non_empty_str(idempotency_key, "idempotency_key")
        return [derived_key(key, ":idempotency:" + idempotency_key)]

    async def compare_and_swap(self, key: str, expected: Any, new: Any) -> bool:
        """Set *key* to *new* only if it holds *expected*; the key's TTL is kept.

        ``expected=None`` means "only if the key does not exist".

        Returns:
            True if the value was swapped, False if the current value differed.
        """
        non_empty_str(key, "key")
        new_value = _value(new, "new")
        if expected is None:
            args: tuple[Any, ...] = ("0", "", new_value)
        else:
            args = ("1", _value(expected, "expected"), new_value)
        return bool(await self._book.run("compare_and_swap", (key,), args))

    async def increment_with_limit(
        self, key: str, amount: int, limit: int, *, ttl: Duration | None = None
    ) -> int:
        """Add *amount* to the counter at *key* unless that takes it past *limit*.

        Args:
            ttl: an expiry set when this call creates the key (a quota window);
                an existing key keeps its own expiry.

        Returns:
            The new value.

        Raises:
            LimitExceeded: ``current + amount > limit``; ``.current`` and ``.limit``
                say by how much. Nothing was written.
            NotAnInteger: *key* holds something other than an integer.
        """
        non_empty_str(key, "key")
        amount = positive_int(amount, "amount")
        limit = positive_int(limit, "limit")
        ttl_ms = 0 if ttl is None else to_milliseconds(ttl, "ttl")
        result: int = await self._book.run("increment_with_limit", (key,), (amount, limit, ttl_ms))
        return result

    async def deduct_inventory(
        self, key: str, quantity: int, *, idempotency_key: str | None = None
    ) -> int:
        """Take *quantity* from the stock counter at *key*, never going below zero.

        Returns:
            The stock left. With an *idempotency_key* already used for this key,
            the first call's result, without deducting again.

        Raises:
            InsufficientStock: the stock is below *quantity* (``.available``,
                ``.requested``). Nothing was written, and no idempotency record
                either, so the same key may be retried once stock arrives.
            InvalidArgument: the *idempotency_key* was used with another quantity.
        """
        non_empty_str(key, "key")
        quantity = positive_int(quantity, "quantity")
        keys = [key, *self._record_key(key, idempotency_key)]
        result: int = await self._book.run(
            "deduct_inventory", keys, (quantity, self._idempotency_ttl_ms)
        )
        return result

    async def transfer(
        self, from_key: str, to_key: str, amount: int, *, idempotency_key: str | None = None
    ) -> tuple[int, int]:
        """Move *amount* from the balance at *from_key* to the one at *to_key*.

        Returns:
            ``(from_balance, to_balance)`` after the transfer. With an
            *idempotency_key* already used for *from_key*, the first call's result.

        Raises:
            InsufficientBalance: the source holds less than *amount* (``.balance``,
                ``.requested``). Nothing was written.
            InvalidArgument: *from_key* equals *to_key*, or the idempotency key was
                used with another amount.
            CrossSlotKeys: on a cluster client, the keys are in different slots.
        """
        non_empty_str(from_key, "from_key")
        non_empty_str(to_key, "to_key")
        amount = positive_int(amount, "amount")
        if from_key == to_key:
            raise InvalidArgument("transfer needs two different keys")
        keys = [from_key, to_key, *self._record_key(from_key, idempotency_key)]
        from_balance, to_balance = await self._book.run(
            "transfer", keys, (amount, self._idempotency_ttl_ms)
        )
        return int(from_balance), int(to_balance)
