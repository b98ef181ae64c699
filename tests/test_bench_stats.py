"""The benchmark's confidence interval of a median ratio, which decides "ahead", "level"
and "behind" in docs/benchmarks.md, picks the right order statistics and covers."""

from __future__ import annotations

import random

import pytest

from benchmarks._stats import median_interval, paired_ratios


@pytest.mark.parametrize(
    ("n", "ranks"), [(6, (1, 6)), (10, (2, 9)), (30, (10, 21)), (60, (22, 39))]
)
def test_interval_uses_the_order_statistics_of_the_binomial_table(
    n: int, ranks: tuple[int, int]
) -> None:
    """With n values the 95% interval runs from the k-th smallest to the k-th largest."""
    values = [float(v) for v in random.Random(n).sample(range(1000), n)]
    ordered = sorted(values)
    assert median_interval(values) == (ordered[ranks[0] - 1], ordered[ranks[1] - 1])


def test_too_few_rounds_give_no_interval() -> None:
    """Five rounds or fewer cannot hold a 95% interval, so none is claimed."""
    assert median_interval([1.0, 2.0, 3.0, 4.0, 5.0]) is None
    assert median_interval([]) is None


def test_interval_holds_the_true_median_at_least_95_percent_of_the_time() -> None:
    """Over 2,000 skewed samples of 60 rounds, the interval covers the true median >= 95%."""
    rng = random.Random(7)
    true_median = 1.0  # of lognormvariate(0, s): exp(0)
    trials, covered = 2000, 0
    for _ in range(trials):
        interval = median_interval([rng.lognormvariate(0.0, 0.3) for _ in range(60)])
        assert interval is not None
        covered += interval[0] <= true_median <= interval[1]
    assert 0.95 <= covered / trials <= 0.995


def test_paired_ratios_skip_rounds_where_either_case_failed() -> None:
    """A failed round (None) or an empty one (0) on either side drops that round only."""
    assert paired_ratios([10.0, None, 30.0, 8.0], [5.0, 7.0, 0.0, 4.0]) == [2.0, 2.0]
