"""AsyncCache loaders that raise CancelledError or another BaseException of their own."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from redis.asyncio import Redis

from aioredis_patterns import AsyncCache


class Stop(BaseException):
    """A BaseException that is not a cancellation, as some libraries use for control flow."""


def _own_cancelled() -> BaseException:
    # What awaiting a future that someone else cancelled raises: the task itself is
    # not being cancelled.
    return asyncio.CancelledError("driver gave up")


NEEDS_CANCELLING = pytest.mark.skipif(
    sys.version_info < (3, 11),
    reason="Task.cancelling() is 3.11+: on 3.10 every CancelledError is taken for a cancellation",
)
"""For a CancelledError the task's own: Python 3.10 cannot tell it from a cancellation."""

EXCEPTIONS = [
    pytest.param(_own_cancelled, id="own-CancelledError", marks=NEEDS_CANCELLING),
    pytest.param(Stop, id="Stop"),
]


async def _five_callers_of_a_raising_load(
    cache: AsyncCache, make_exc: Any, *, hosted: bool
) -> tuple[int, list[BaseException], bool]:
    """Five callers share a load whose loader raises make_exc(); (loader calls, what each got,
    whether the code after the calls ran)."""
    calls = 0
    gate = anyio.Event()
    raised = make_exc()

    async def loader() -> Any:
        nonlocal calls
        calls += 1
        await gate.wait()
        raise raised

    got: list[BaseException] = []

    async def call() -> None:
        try:
            await cache.get_or_load("k", loader)
        except BaseException as exc:  # what arrives here is the point
            got.append(exc)

    reached = False
    with anyio.fail_after(10):
        async with cache if hosted else contextlib.nullcontext():
            async with anyio.create_task_group() as tg:
                for _ in range(5):
                    tg.start_soon(call)
                while calls < 1 or cache.stats.coalesced < 4:  # noqa: ASYNC110
                    await anyio.sleep(0.005)
                gate.set()
            await anyio.sleep(0.05)  # the block goes on after the calls
            reached = True
    return calls, got, reached


class TestLoaderBaseExceptions:
    @pytest.mark.parametrize("make_exc", EXCEPTIONS)
    async def test_hosted_load_raising_a_base_exception_leaves_the_cache_block_running(
        self, redis: Redis, make_exc: Any
    ) -> None:
        """In `async with cache:`, a loader's own CancelledError/BaseException reaches every
        sharing caller once and does not cancel the cache's task group or the block."""
        cache = AsyncCache(redis, namespace="hbx:", ttl=30)
        calls, got, reached = await _five_callers_of_a_raising_load(cache, make_exc, hosted=True)
        assert reached
        assert calls == 1
        assert len(got) == 5
        assert len({id(e) for e in got}) == 1
        assert not isinstance(got[0], asyncio.CancelledError) or "driver gave up" in str(got[0])

    @pytest.mark.parametrize("make_exc", EXCEPTIONS)
    async def test_inline_load_raising_a_base_exception_runs_the_loader_once(
        self, redis: Redis, make_exc: Any
    ) -> None:
        """Outside `async with`, a loader's own CancelledError/BaseException is shared by the five
        callers: one loader call, not one per caller."""
        cache = AsyncCache(redis, namespace="ibx:", ttl=30)
        calls, got, reached = await _five_callers_of_a_raising_load(cache, make_exc, hosted=False)
        assert reached
        assert calls == 1
        assert len(got) == 5
        assert len({id(e) for e in got}) == 1

    @NEEDS_CANCELLING
    async def test_background_refresh_whose_loader_raises_cancelled_error_is_just_a_failed_refresh(
        self, redis: Redis
    ) -> None:
        """A background refresh whose loader raises CancelledError itself is a failed refresh:
        the block goes on and the value stays."""
        cache = AsyncCache(redis, namespace="bgx:", ttl=1.0, rand=lambda: 1 - 1e-10)

        async def good() -> str:
            await anyio.sleep(0.05)
            return "good"

        refreshes = 0

        async def bad() -> str:
            nonlocal refreshes
            refreshes += 1
            await anyio.lowlevel.checkpoint()
            raise _own_cancelled()

        reached = False
        with anyio.fail_after(10):
            async with cache:
                assert await cache.get_or_load("k", good) == "good"
                assert await cache.get_or_load("k", bad) == "good"  # the refresh runs apart
                await anyio.sleep(0.1)
                reached = True
        assert reached
        assert refreshes == 1
        assert cache.stats.load_errors == 1
        assert await redis.get("bgx:k") == b'"good"'
