"""Medians of paired per-round ratios, and how far they can be trusted.

A ratio between two cases is the median of their per-round ratios (they ran back
to back in each round). Its interval is the distribution-free 95% confidence
interval of that median: two order statistics of the sorted ratios, chosen from
the binomial distribution, which assumes nothing about the shape of the noise,
only that rounds are independent. A ratio whose interval holds 1.00 is a tie in
that run; one whose interval lies above 1.00 is ahead.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

Interval = tuple[float, float]


def paired_ratios(mine: Sequence[float | None], theirs: Sequence[float | None]) -> list[float]:
    """Per-round ratios of two cases' ops/s, skipping rounds where either failed."""
    return [m / t for m, t in zip(mine, theirs, strict=True) if m and t]


def median(ratios: Sequence[float]) -> float | None:
    return statistics.median(ratios) if ratios else None


def compare(
    mine: Sequence[float | None], theirs: Sequence[float | None]
) -> tuple[float | None, Interval | None]:
    """Two cases' per-round ops/s compared: the median ratio and its 95% interval."""
    ratios = paired_ratios(mine, theirs)
    return median(ratios), median_interval(ratios)


def verdict(interval: Interval | None) -> str | None:
    """ "ahead", "level" or "behind" of 1.00x by *interval*; None without one."""
    if interval is None:
        return None
    low, high = interval
    return "ahead" if low > 1.0 else "behind" if high < 1.0 else "level"


def median_interval(ratios: Sequence[float], confidence: float = 0.95) -> Interval | None:
    """The distribution-free *confidence* interval of the median of *ratios*.

    With n values, the interval runs from the k-th smallest to the k-th largest,
    for the largest k such that a Binomial(n, 1/2) count falls below k with
    probability at most (1 - confidence) / 2. None when n is too small for any
    interval at that confidence (n < 6 at 95%).
    """
    n = len(ratios)
    tail = (1.0 - confidence) / 2.0
    k, below = 0, 0.0
    while k < n // 2:
        below_next = below + math.comb(n, k) / 2.0**n  # P(count <= k)
        if below_next > tail:
            break
        below, k = below_next, k + 1
    if k == 0:
        return None
    ordered = sorted(ratios)
    return ordered[k - 1], ordered[n - k]
