"""The event loop the suite runs on is the one it was asked for.

``nox -s tests_uvloop`` runs the tests that lean on the loop's timers, transports
and task machinery again on uvloop, the loop uvicorn picks when it is installed;
this test fails if that session quietly ran them on asyncio's own loop.
"""

from __future__ import annotations

import asyncio

from .conftest import TEST_LOOP


async def test_the_tests_run_on_the_loop_asked_for() -> None:
    """With AIOREDIS_PATTERNS_TEST_LOOP=uvloop the tests run on uvloop, else on asyncio's loop."""
    loop = asyncio.get_running_loop()
    if TEST_LOOP == "uvloop":
        import uvloop

        assert isinstance(loop, uvloop.Loop)
    else:
        assert type(loop).__module__.startswith("asyncio.")
