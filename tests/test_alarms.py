"""The toolkit's short-lived deadlines: one event-loop timer per loop (``_alarms``).

Lock blocks set two per ``async with`` and connections one per reply read.
"""

from __future__ import annotations

import asyncio
import logging

import anyio
import pytest

from aioredis_patterns import _alarms


class TestAlarms:
    async def test_alarms_run_in_due_order_and_cancelled_ones_never(self) -> None:
        """Of five alarms two are cancelled; the other three run once each, earliest first."""
        ran: list[int] = []
        delays = [0.05, 0.01, 0.03, 0.02, 0.04]
        alarms = [
            _alarms.call_later(delay, lambda i=i: ran.append(i)) for i, delay in enumerate(delays)
        ]
        alarms[3].cancel()
        alarms[0].cancel()
        alarms[0].cancel()  # twice is harmless
        await anyio.sleep(0.1)
        assert ran == [1, 2, 4]
        alarms[1].cancel()  # after it ran: harmless too

    async def test_an_alarm_fires_after_its_delay_not_before(self) -> None:
        """By the loop's clock an alarm set for 50 ms has not run at 30 ms, and has by 250 ms."""
        # The loop's clock, as for asyncio's call_later: uvloop's ticks in whole
        # milliseconds and may stand up to one behind time.monotonic().
        loop = asyncio.get_running_loop()
        ran_at: list[float] = []
        fired = anyio.Event()
        started = loop.time()
        _alarms.call_later(0.05, lambda: (ran_at.append(loop.time()), fired.set()))
        await anyio.sleep(0.03)
        assert not fired.is_set()
        with anyio.fail_after(0.25):
            await fired.wait()
        assert ran_at[0] >= started + 0.05  # the alarm's own sum: a difference may round below

    async def test_cancelled_alarms_are_swept_and_live_ones_kept(self) -> None:
        """20,000 alarms set and cancelled leave a small heap, and a live one among them runs."""
        ran: list[str] = []
        _alarms.call_later(0.05, lambda: ran.append("live"))
        for _ in range(20_000):
            _alarms.call_later(10.0, lambda: ran.append("cancelled")).cancel()
        alarms = _alarms._BY_LOOP[asyncio.get_running_loop()]
        assert len(alarms._heap) < 1_000
        await anyio.sleep(0.1)
        assert ran == ["live"]

    async def test_a_failing_callback_is_logged_and_the_rest_still_run(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A callback that raises is logged; an alarm due at the same time still runs."""
        ran: list[str] = []

        def boom() -> None:
            raise RuntimeError("boom")

        with caplog.at_level(logging.ERROR, logger="aioredis_patterns"):
            _alarms.call_later(0.01, boom)
            _alarms.call_later(0.01, lambda: ran.append("after"))
            await anyio.sleep(0.05)
        assert ran == ["after"]
        assert "boom" in caplog.text

    async def test_an_alarm_set_by_a_callback_does_not_delay_an_earlier_pending_one(self) -> None:
        """A callback that sets a far alarm leaves the next pending alarm on time."""
        fired = anyio.Event()
        far = []

        def set_far() -> None:
            far.append(_alarms.call_later(5.0, lambda: None))

        _alarms.call_later(0.01, set_far)
        _alarms.call_later(0.05, fired.set)
        try:
            with anyio.fail_after(1.0):
                await fired.wait()
        finally:
            for alarm in far:
                alarm.cancel()
