"""Exception groups from anyio task groups, turned back into the one exception to raise,
and the test that tells a task's cancellation from a CancelledError of user code.

Every background loop (lock watchdog, consumer reader and workers) lives in a task
group, and a task group reports failures as an ExceptionGroup. Callers must see
``LockLost`` or their own exception as itself, so the owners re-raise the leaf.
"""

from __future__ import annotations

import asyncio
import math
import sys

import anyio

if sys.version_info < (3, 11):  # pragma: no cover - anyio installs the backport there
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

__all__ = ["first_error", "is_cancellation"]


def first_error(error: BaseException) -> BaseException:
    """The one exception to re-raise for *error*; *error* itself when it is no group.

    Nested groups are flattened. A real error wins over the cancellations it
    caused; among several, the first.
    """
    leaves: list[BaseException] = []
    pending = [error]
    while pending:
        current = pending.pop(0)
        if isinstance(current, BaseExceptionGroup):
            pending[:0] = list(current.exceptions)
        else:
            leaves.append(current)
    cancelled = anyio.get_cancelled_exc_class()
    real = [leaf for leaf in leaves if not isinstance(leaf, cancelled)]
    return (real or leaves or [error])[0]


def is_cancellation(exc: BaseException) -> bool:
    """Whether *exc* cancels the running task, rather than being user code's own outcome.

    Awaiting a future that someone else cancelled raises ``CancelledError`` in a task
    nobody cancels: that is a loader or handler failing, to be handled like any
    error. Re-raised in a task group, it would cancel the whole group. A cancel
    scope in effect or a pending ``Task.cancel()`` means a real cancellation, and so
    does any ``CancelledError`` where asyncio cannot tell (Python 3.10, which has no
    ``Task.cancelling()``).
    """
    if not isinstance(exc, anyio.get_cancelled_exc_class()):
        return False
    if anyio.current_effective_deadline() == -math.inf:
        return True
    try:
        task = asyncio.current_task()
    except RuntimeError:  # not on asyncio
        return True
    cancelling = getattr(task, "cancelling", None)
    return cancelling is None or cancelling() > 0
