"""Argument checks shared by every pattern: run before any round trip."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any, TypeAlias

from ._exceptions import InvalidArgument

MAX_SAFE_INT = 2**53 - 1
"""Largest integer a Lua number (a double) holds exactly; scripts do arithmetic in doubles."""

Duration: TypeAlias = "float | timedelta"
"""A duration: float seconds or a :class:`datetime.timedelta`, everywhere the same way."""


def _shown(value: Any) -> str:
    """*value* for an error message: an int too long to print is described instead.

    ``repr`` raises ``ValueError`` for an int of more than 4300 digits (Python's
    int-to-text limit), which would replace the :class:`InvalidArgument` being built.
    """
    if isinstance(value, int) and value.bit_length() > 256:
        return f"an int of {value.bit_length()} bits"
    return repr(value)


def to_seconds(value: Any, name: str) -> float:
    """Return *value* as finite, positive float seconds, or raise :class:`InvalidArgument`."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgument(
            f"{name} must be seconds (int or float) or a timedelta, not {type(value).__name__}"
        )
    else:
        try:
            seconds = float(value)
        except OverflowError:  # an int past a float's range
            seconds = math.inf
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidArgument(f"{name} must be finite and > 0, got {_shown(value)}")
    return seconds


def to_milliseconds(value: Any, name: str) -> int:
    """Return *value* as a whole number of milliseconds, from 1 to :data:`MAX_SAFE_INT`.

    Rounds up, so a 0.4 ms duration becomes 1 ms rather than a TTL of 0. The scripts
    refuse a longer one (a Lua number holds no larger integer exactly), so it is
    refused here, before anything is sent.
    """
    milliseconds = to_seconds(value, name) * 1000
    if milliseconds > MAX_SAFE_INT:
        raise InvalidArgument(
            f"{name} must be at most {MAX_SAFE_INT} ms (about 285,000 years), got {_shown(value)}"
        )
    return max(1, math.ceil(milliseconds))


def optional_seconds(value: Any, name: str) -> float | None:
    """Like :func:`to_seconds`, but ``None`` passes through."""
    return None if value is None else to_seconds(value, name)


def positive_int(value: Any, name: str, *, maximum: int = MAX_SAFE_INT) -> int:
    """Return *value* as a plain ``int`` if it is an integer in ``1..maximum``, else raise.

    Booleans, floats (even ``2.0``), strings and NaN are refused: a quantity that
    arrives as anything but ``int`` is a bug upstream, and guessing hides it. An
    ``int`` subclass such as an ``IntEnum`` member is returned as its plain ``int``,
    since redis-py would send its ``repr`` (``<Qty.ONE: 1>``).

    Raises:
        InvalidArgument: *value* is not such an integer.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(
            f"{name} must be an int >= 1, not {type(value).__name__} {_shown(value)}"
        )
    if not 1 <= value <= maximum:
        raise InvalidArgument(f"{name} must be between 1 and {maximum}, got {_shown(value)}")
    return int(value)


def non_empty_str(value: Any, name: str) -> str:
    """Return *value* if it is a non-empty ``str``, else raise :class:`InvalidArgument`."""
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"{name} must be a non-empty str, got {_shown(value)}")
    return value
