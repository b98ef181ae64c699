"""AsyncRedlock: the lock over N independent Redis masters, held by a quorum."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import anyio

from .._exceptions import AioRedisPatternsError, InvalidArgument
from .._scripts import ScriptBook
from .._validation import Duration, optional_seconds
from ._base import (
    DEFAULT_CLOCK,
    DEFAULT_SLEEP,
    RELEASE_TIMEOUT,
    Attempt,
    Holder,
)
from ._waiting import SIGNAL_TTL_MS, WAITER_FLAG_TTL_MS, wait_for_signal
from ._watchdog import TRANSIENT_ERRORS, Clock, Sleep, Undecided, drift, logger

__all__ = ["AsyncRedlock"]

T = TypeVar("T")

RELEASE_NODE_TIMEOUT = RELEASE_TIMEOUT * 0.75
"""Bound on one node's answer to a release, below RELEASE_TIMEOUT (the bound on the whole
release at a block's exit), so the nodes that did answer decide the release before it."""


class _NoAnswer:
    """A node that did not answer within the node timeout."""

    def __repr__(self) -> str:
        return "<no answer>"


NO_ANSWER = _NoAnswer()


class AsyncRedlock(Holder):
    """The Redlock algorithm over independent Redis masters, with AsyncLock's interface.

    An acquire sets ``prefix + name`` to a fresh token on every node at once, each
    node bounded by ``node_timeout``. It holds the lock when a quorum (N//2 + 1)
    of nodes accepted and time is left: validity = ttl - elapsed - drift, with
    drift = 1% of ttl + 2 ms. A failed acquire releases every node that may hold
    its token: those it won, and those that failed or answered too late (they may
    have taken it after all). When the script refuses on so many nodes that no
    quorum can be won (a corrupt fence counter), the acquire raises the error
    those nodes reported (:class:`NotAnInteger`), as AsyncLock does, instead of
    waiting for a quorum that cannot come. Extends, made by the watchdog every ttl/3,
    count only when a quorum confirms; release reports True when a quorum still
    held the lock.

    Fencing tokens: each node keeps its last token in ``{key}:fence`` (drawn as
    :class:`AsyncLock` draws them). The token is the largest among the nodes won,
    and, when the nodes disagree, a second round raises the counter of every won
    node to it while the lock is still held there. Any later quorum shares a node
    with this one, so every later token is larger. Redlock still rests on timing
    assumptions (bounded clock drift and pauses, nodes that keep their keys across
    restarts): read docs/lock.md before trusting it with correctness rather than
    efficiency.

    Args:
        clients: one ``redis.asyncio`` client per independent master (not replicas
            of one another). One client is allowed; it then behaves like AsyncLock.
        name, ttl, auto_extend, blocking, timeout, prefix, max_extensions,
            max_hold, clock, sleep: as for :class:`AsyncLock`.
        node_timeout: how long one node may take to answer one call before it
            counts as failed (default: ttl/20, at least 100 ms, at most 1 s). A
            release waits for a node at most the smaller of this and 750 ms, so
            the nodes that answered decide it within its own 1 s bound.

    Raises:
        InvalidArgument: no clients, or a bad argument as for :class:`AsyncLock`.
    """

    _kind = "redlock"

    def __init__(
        self,
        clients: Sequence[Any],
        name: str,
        *,
        ttl: Duration = 30.0,
        auto_extend: bool = True,
        blocking: bool = True,
        timeout: Duration | None = None,
        prefix: str = "lock:",
        node_timeout: Duration | None = None,
        max_extensions: int | None = None,
        max_hold: Duration | None = None,
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
        self._clients = list(clients)
        if not self._clients:
            raise InvalidArgument("AsyncRedlock needs at least one client")
        if len({id(c) for c in self._clients}) != len(self._clients):
            raise InvalidArgument("AsyncRedlock needs distinct clients, one per master")
        self._books = [ScriptBook.for_client(c) for c in self._clients]
        self._quorum = len(self._clients) // 2 + 1
        chosen = optional_seconds(node_timeout, "node_timeout")
        self._node_timeout = chosen if chosen is not None else min(max(self._ttl / 20, 0.1), 1.0)
        self._signal_node = 0

    @property
    def quorum(self) -> int:
        """How many nodes must agree: N//2 + 1."""
        return self._quorum

    @property
    def _line_client(self) -> Any:
        return self._clients[0]

    async def owned(self) -> bool:
        """True when a quorum of nodes holds this instance's token now."""
        if self._lease is None:
            return False
        values = await self._values()
        return values.count(self._lease.token) >= self._quorum

    async def locked(self) -> bool:
        """True when one token is held on a quorum of nodes now."""
        values = [v for v in await self._values() if v is not None]
        return bool(values) and Counter(values).most_common(1)[0][1] >= self._quorum

    async def _values(self) -> list[str | None]:
        answers = await self._on_nodes(lambda c, _b: c.get(self._key))
        values: list[str | None] = []
        for answer in answers:
            if isinstance(answer, bytes):
                values.append(answer.decode())
            elif isinstance(answer, str):
                values.append(answer)
            else:
                values.append(None)
        return values

    async def _on_nodes(
        self,
        call: Callable[[Any, ScriptBook], Awaitable[T]],
        nodes: Sequence[int] | None = None,
        *,
        node_timeout: float | None = None,
    ) -> list[T | BaseException | _NoAnswer]:
        """Run *call* on each node at once; each answer, error or NO_ANSWER, in node order.

        Each node is given *node_timeout* seconds (default: the lock's ``node_timeout``).
        """
        chosen = range(len(self._clients)) if nodes is None else nodes
        answers: list[T | BaseException | _NoAnswer] = [NO_ANSWER] * len(chosen)
        bound = self._node_timeout if node_timeout is None else node_timeout

        async def one(slot: int, node: int) -> None:
            with anyio.move_on_after(bound):
                try:
                    answers[slot] = await call(self._clients[node], self._books[node])
                except Exception as exc:  # one node failing is what Redlock is for
                    answers[slot] = exc
                    logger.debug("redlock %r: node %d failed: %r", self._name, node, exc)

        async with anyio.create_task_group() as tg:
            for slot, node in enumerate(chosen):
                tg.start_soon(one, slot, node)
        _raise_bugs(answers)
        return answers

    async def _try(self, token: str, *, waiting: bool) -> Attempt:
        started = self._clock()
        keys = (self._key, self._fence_key, self._waiter_key)
        args = (token, self._ttl_ms, WAITER_FLAG_TTL_MS)
        answers = await self._on_nodes(lambda _c, book: book.run("lock_acquire", keys, args))
        won: list[tuple[int, int]] = []
        hints: list[int] = []
        held: list[int] = []
        refusals: list[AioRedisPatternsError] = []
        for node, answer in enumerate(answers):
            if isinstance(answer, list) and answer[0] == 1:
                won.append((node, int(answer[1])))
            elif isinstance(answer, list):
                held.append(node)
                if answer[1] >= 0:
                    hints.append(int(answer[1]))
            elif isinstance(answer, AioRedisPatternsError):
                refusals.append(answer)  # the script refused (a corrupt counter): no retry helps
        if len(self._clients) - len(refusals) < self._quorum:
            # Too few nodes can ever accept: report why, as AsyncLock does, instead of
            # waiting for a quorum that cannot come. _attempt gives the token back.
            raise _most_common(refusals)
        if len(won) >= self._quorum:
            fence = max(count for _, count in won)
            behind = [node for node, count in won if count < fence]
            raised = len(won) - len(behind)
            if behind:
                lifted = await self._on_nodes(
                    lambda _c, book: book.run(
                        "lock_fence", (self._key, self._fence_key), (token, fence)
                    ),
                    behind,
                )
                raised += sum(1 for answer in lifted if answer == 1)
            validity = self._ttl - (self._clock() - started) - drift(self._ttl)
            if raised >= self._quorum and validity > 0:
                return Attempt(True, fence=fence)
        # Not held: give back every node that may hold the token, including those
        # that failed or did not answer in time (they may have set the key after
        # all). A node that answered "held by another" has nothing of ours.
        maybe_ours = [
            node
            for node, answer in enumerate(answers)
            if not (isinstance(answer, list) and answer[0] == 0)
        ]
        if maybe_ours:
            with anyio.move_on_after(RELEASE_TIMEOUT, shield=True):
                await self._release_nodes(token, maybe_ours)
        if held and self._signal_node % len(self._clients) not in held:
            # Only nodes where the lock is held carry this waiter's flag, so only their
            # releases signal: listen on one of them.
            self._signal_node = held[0]
        return Attempt(False, hint=min(hints) / 1000 if hints else None)

    async def _extend_token(self, token: str, ttl_ms: int) -> bool:
        answers = await self._on_nodes(
            lambda _c, book: book.run("lock_extend", (self._key,), (token, ttl_ms))
        )
        confirmed = sum(1 for answer in answers if answer == 1)
        refused = sum(1 for answer in answers if answer == 0)
        if confirmed >= self._quorum:
            return True
        if refused > len(self._clients) - self._quorum:
            return False  # a quorum can no longer confirm: definitely lost
        raise Undecided(
            f"extend confirmed on {confirmed} and refused on {refused} of "
            f"{len(self._clients)} nodes"
        )

    async def _release_token(self, token: str) -> bool:
        answers = await self._release_answers(token, range(len(self._clients)))
        if sum(1 for answer in answers if answer == 1) >= self._quorum:
            return True
        if sum(1 for answer in answers if answer == 0) > len(self._clients) - self._quorum:
            return False  # too few nodes still held it for a quorum: it was lost
        # Too few nodes answered to tell: that is no loss, and the release may be retried.
        errors = [answer for answer in answers if isinstance(answer, BaseException)]
        if errors:
            raise errors[0]
        raise TimeoutError(f"releasing lock {self._name!r}: too few nodes answered")

    async def _release_nodes(self, token: str, nodes: Sequence[int]) -> int:
        """Compare-and-delete on *nodes*; how many still held *token*."""
        return sum(1 for answer in await self._release_answers(token, nodes) if answer == 1)

    async def _release_answers(
        self, token: str, nodes: Sequence[int]
    ) -> list[Any | BaseException | _NoAnswer]:
        """Compare-and-delete on *nodes*; each node's answer (1 held, 0 not), error or NO_ANSWER."""
        return await self._on_nodes(
            lambda _c, book: book.run(
                "lock_release",
                (self._key, self._waiter_key, self._signal_key),
                (token, SIGNAL_TTL_MS),
            ),
            nodes,
            node_timeout=min(self._node_timeout, RELEASE_NODE_TIMEOUT),
        )

    async def _wait_signal(self, seconds: float) -> bool:
        # Releases signal on every node where a waiter's failed acquire left its flag,
        # so listening on one of those suffices; a node that fails is swapped for the next.
        node = self._signal_node % len(self._clients)
        signalled = await wait_for_signal(
            self._clients[node], self._signal_key, seconds, self._sleep
        )
        if signalled is None:
            self._signal_node += 1
        return bool(signalled)


def _most_common(errors: Sequence[AioRedisPatternsError]) -> AioRedisPatternsError:
    """The first of the errors of the type most nodes reported."""
    kind, _ = Counter(type(error) for error in errors).most_common(1)[0]
    return next(error for error in errors if type(error) is kind)


def _raise_bugs(answers: Sequence[object]) -> None:
    """Re-raise when every node failed with something other than a Redis or network error."""
    errors = [a for a in answers if isinstance(a, BaseException)]
    if errors and len(errors) == len(answers):
        for error in errors:
            if not isinstance(error, (*TRANSIENT_ERRORS, AioRedisPatternsError)):
                raise error
