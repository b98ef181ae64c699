"""AsyncLock: a lock on one Redis that knows when it is lost."""

from __future__ import annotations

from typing import Any

from redis.exceptions import OutOfMemoryError

from .._scripts import ScriptBook
from .._validation import Duration
from ._base import DEFAULT_CLOCK, DEFAULT_SLEEP, Attempt, Holder
from ._waiting import SIGNAL_TTL_MS, WAITER_FLAG_TTL_MS, wait_for_signal
from ._watchdog import Clock, Sleep

__all__ = ["AsyncLock"]


class AsyncLock(Holder):
    """A distributed lock on one Redis, with a watchdog, fencing tokens and wake-on-release.

    The key ``prefix + name`` holds a fresh random 128-bit token with a PX expiry:
    the layout of the seed's Go ``DistributedLock``, so a Go service running its
    lock script on ``lock:order:123`` and ``AsyncLock(client, "order:123")`` exclude
    each other. Release and extend compare the token first, so one owner never
    deletes or prolongs another's lock, and a key that is gone is never re-created.

    The usual form is ``async with``::

        async with AsyncLock(client, "order:123", ttl=10) as lock:
            await storage.write(data, fence=lock.fencing_token)

    It acquires (waiting up to ``timeout``), then a watchdog extends the lock every
    ttl/3 and retries failed extends while the lock is still valid. On a definite
    loss (an extend finds the key gone or holding another token, or the validity
    runs out without a successful extend, including because the event loop was
    blocked) the body is cancelled and :class:`LockLost` is raised out of the
    block. Leaving the block releases, shielded from cancellation and bounded in
    time, so a cancelled holder frees the lock at once. :class:`LockLost` and the
    body's own exceptions reach the caller as themselves, never in an
    ``ExceptionGroup``.

    The token lives on the instance (not in a thread-local): one instance is one
    holder, to be used by one task at a time. Make one instance per task that
    wants the lock.

    Args:
        client: a ``redis.asyncio`` client.
        name: the lock's name; the key is ``prefix + name``.
        ttl: seconds (or a timedelta) each acquire or extend holds the lock for.
        auto_extend: let the watchdog extend the lock inside ``async with``. When
            false, the body is still cancelled once the ttl runs out.
        blocking: whether :meth:`acquire` and ``async with`` wait for the lock.
        timeout: how long they wait at most (``None``: as long as it takes). An
            attempt still unanswered then is abandoned and given back, so they
            end within *timeout* plus at most 1 s, the bound on that give-back.
        prefix: prepended to *name* to make the key.
        scripts: the :class:`ScriptBook` to use (default: the client's shared book).
        max_extensions: the watchdog extends at most this many times per hold.
        max_hold: the body is cancelled this long after the acquire at the latest.
        fencing: draw a fencing token with each acquire (in the acquire script).
            With ``fencing=False`` an acquire is one plain ``SET key token NX PX ttl``,
            the command redis-py's Lock and the seed's Go lock send, and
            :attr:`fencing_token` raises :class:`LockError`.
            A refused acquire that goes on to wait retries at once with the script,
            which leaves the waiter flag that makes the release wake it.
        clock: a monotonic clock in seconds (for tests).
        sleep: the sleep matching *clock* (for tests).

    Raises:
        InvalidArgument: an empty name, a ttl that is not finite and positive, a
            negative timeout, and so on; raised here, before any round trip.
    """

    _kind = "lock"

    def __init__(
        self,
        client: Any,
        name: str,
        *,
        ttl: Duration = 30.0,
        auto_extend: bool = True,
        blocking: bool = True,
        timeout: Duration | None = None,
        prefix: str = "lock:",
        scripts: ScriptBook | None = None,
        max_extensions: int | None = None,
        max_hold: Duration | None = None,
        fencing: bool = True,
        clock: Clock = DEFAULT_CLOCK,
        sleep: Sleep = DEFAULT_SLEEP,
    ) -> None:
        super().__init__(
            name,
            prefix=prefix,
            ttl=ttl,
            auto_extend=auto_extend,
            blocking=blocking,
            timeout=timeout,
            max_extensions=max_extensions,
            max_hold=max_hold,
            clock=clock,
            sleep=sleep,
        )
        self._client = client
        self._book = scripts or ScriptBook.for_client(client)
        self._fencing = bool(fencing)

    @property
    def _line_client(self) -> Any:
        return self._client

    async def owned(self) -> bool:
        """True when the key holds this instance's token now (one GET)."""
        if self._lease is None:
            return False
        value = await self._client.get(self._key)
        if isinstance(value, bytes):
            value = value.decode()
        return bool(value == self._lease.token)

    async def locked(self) -> bool:
        """True when anyone holds the lock now (one EXISTS)."""
        return bool(await self._client.exists(self._key))

    async def _try(self, token: str, *, waiting: bool) -> Attempt:
        try:
            if not (self._fencing or waiting):
                # the seed's acquire: no script, no counter, and no waiter flag when refused
                reply = await self._book.send_command(
                    "SET", self._key, token, "NX", "PX", self._ttl_ms
                )
                return Attempt(reply is not None, flagged=False)
            acquired, value = await self._book.run(
                "lock_acquire",
                (self._key, self._fence_key, self._waiter_key),
                (token, self._ttl_ms, WAITER_FLAG_TTL_MS, "1" if self._fencing else "0"),
            )
        except OutOfMemoryError as refused:
            return await self._held_on_a_full_server(refused)
        if acquired == 1:
            return Attempt(True, fence=int(value) if self._fencing else None)
        return Attempt(False, hint=value / 1000 if value >= 0 else None)

    async def _held_on_a_full_server(self, refused: OutOfMemoryError) -> Attempt:
        """The attempt's answer after a full server refused it, or *refused* raised again.

        A full server (maxmemory, noeviction) refuses SET NX before it looks at the
        key, so a held lock answers with OutOfMemoryError too. A read it serves
        tells which: a held lock is the usual "not acquired"; a free lock that
        cannot be written is the error.
        """
        pttl = await self._book.send_command("PTTL", self._key)
        if pttl == -2:
            raise refused
        return Attempt(False, hint=pttl / 1000 if pttl >= 0 else None, flagged=False)

    async def _extend_token(self, token: str, ttl_ms: int) -> bool:
        return bool(await self._book.run("lock_extend", (self._key,), (token, ttl_ms)))

    async def _release_token(self, token: str) -> bool:
        return bool(
            await self._book.run(
                "lock_release",
                (self._key, self._waiter_key, self._signal_key),
                (token, SIGNAL_TTL_MS),
            )
        )

    async def _wait_signal(self, seconds: float) -> bool:
        return bool(await wait_for_signal(self._client, self._signal_key, seconds, self._sleep))
