"""Exception groups from anyio task groups, turned back into the one exception to raise.

Every background loop (lock watchdog, consumer reader and workers) lives in a task
group, and a task group reports failures as an ExceptionGroup. Callers must see
``LockLost`` or their own exception as itself, so the owners re-raise the leaf.
"""

from __future__ import annotations

import sys

import anyio

if sys.version_info < (3, 11):  # pragma: no cover - anyio installs the backport there
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

__all__ = ["first_error"]


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
