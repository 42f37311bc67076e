"""Verdicts from intervals against margins (stabilityscope.analysis.verdicts): the three outcomes, the intervals
against independent computations, and the planned number of seeds against a simulation of the experiment."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from stabilityscope.analysis.verdicts import (
    INCONCLUSIVE,
    NOT_REPRODUCED,
    NOT_RUN,
    REPRODUCED,
    Margin,
    Verdict,
    combine,
    difference_interval,
    fraction_interval,
    judge,
    judge_difference,
    judge_fraction,
    judge_mean,
    mean_interval,
    units_needed,
)

BAND = Margin(0.85, 1.15, "test")


@pytest.mark.parametrize("interval, verdict", [((0.9, 1.1), REPRODUCED), ((0.85, 1.15), REPRODUCED),
                                               ((1.2, 1.4), NOT_REPRODUCED), ((0.5, 0.84), NOT_REPRODUCED),
                                               ((0.9, 1.2), INCONCLUSIVE), ((0.5, 1.5), INCONCLUSIVE)])
def test_the_interval_against_the_margin_decides(interval, verdict):
    v = judge(sum(interval) / 2, interval, BAND, n=3)
    assert v.verdict == verdict
    assert (v.needed is not None) == (verdict == INCONCLUSIVE)


def test_one_sided_margins_and_a_missing_interval():
    positive = Margin(0, math.inf)
    assert judge(0.5, (0.1, 0.9), positive, 5).verdict == REPRODUCED
    assert judge(-0.5, (-0.9, -0.1), positive, 5).verdict == NOT_REPRODUCED
    assert positive.describe() == ">= 0" and Margin(-math.inf, 0.15).describe() == "<= 0.15"
    one = judge_mean([1.0], BAND)  # one seed: no interval, nothing to plan with
    assert one.verdict == INCONCLUSIVE and one.needed is None and "no interval" in one.why
    assert judge_mean([], BAND).verdict == NOT_RUN
    with pytest.raises(ValueError, match="low < high"):
        Margin(1, 1)


def test_intervals_match_scipy():
    x, y = np.array([1.0, 1.2, 0.9, 1.1]), np.array([0.7, 0.8, 0.95])
    m, lo, hi, n = mean_interval(x)
    ref = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    assert (m, lo, hi, n) == pytest.approx((x.mean(), *ref, 4), rel=1e-12)
    d, lo, hi, n = difference_interval(x, y)
    res = stats.ttest_ind(x, y, equal_var=False)
    ci = res.confidence_interval(0.95)
    assert (d, lo, hi, n) == pytest.approx((x.mean() - y.mean(), ci.low, ci.high, 3), rel=1e-10)
    lo, hi = fraction_interval(3, 10)
    ref = stats.binomtest(3, 10).proportion_ci(0.95, method="exact")
    assert (lo, hi) == pytest.approx((ref.low, ref.high), rel=1e-10)
    assert fraction_interval(0, 6) == pytest.approx((0, 1 - 0.025 ** (1 / 6)))  # the closed form at 0 successes


def _decision_rate(theta, sigma, margin, n, trials, rng, groups=1):
    """How often an experiment with n units per group gives reproduced or not reproduced (simulated)."""
    decided = 0
    for _ in range(trials):
        if groups == 1:
            v = judge_mean(rng.normal(theta, sigma, n), margin)
        else:
            v = judge_difference(rng.normal(theta, sigma / math.sqrt(2), n), rng.normal(0.0, sigma / math.sqrt(2), n),
                                 margin)
        decided += v.verdict != INCONCLUSIVE
    return decided / trials


def test_the_seeds_needed_give_the_stated_power_in_simulation():
    """Outside the margin only one bound matters and the planned n is exact: n decides with >= 80% probability,
    n − 1 with less (4,000 simulated experiments each: binomial sd 0.0063)."""
    rng = np.random.default_rng(0)
    theta, sigma, margin = 1.25, 0.2, BAND
    n = int(units_needed(theta, sigma, margin, power=0.8))
    assert n >= 3
    assert _decision_rate(theta, sigma, margin, n, 4000, rng) >= 0.8 - 0.02
    assert _decision_rate(theta, sigma, margin, n - 1, 4000, rng) < 0.8 + 0.02


def test_inside_the_margin_the_plan_is_a_safe_bound():
    """Inside, both bounds must hold; the failure probabilities are added (a lower bound of the power), so the
    planned n decides at least as often as stated, both for a mean and for a two-group difference."""
    rng = np.random.default_rng(1)
    n = int(units_needed(1.05, 0.1, BAND))
    assert _decision_rate(1.05, 0.1, BAND, n, 2000, rng) >= 0.8 - 0.03
    tight = Margin(-math.inf, math.log(1.02))
    m = int(units_needed(-0.02, 0.06, tight, groups=2, params=2))  # σ of the difference of one pair
    assert _decision_rate(-0.02, 0.06, tight, m, 2000, rng, groups=2) >= 0.8 - 0.03


def test_the_planned_seeds_come_back_from_an_interval():
    """judge() reads σ back from the interval it is given: the seeds it plans equal those planned from σ itself."""
    values = np.array([1.02, 1.10, 1.19])
    m, lo, hi, n = mean_interval(values)
    v = judge(m, (lo, hi), BAND, n)
    assert v.verdict == INCONCLUSIVE
    assert v.needed == units_needed(m, float(values.std(ddof=1)), BAND)
    assert judge(1.15, (1.0, 1.3), BAND, 3).needed == math.inf  # on the bound: nothing settles it
    assert "settle" in v.describe() and "[0.85, 1.15]" in v.describe()


def test_fractions_plan_exactly():
    half = Margin(0.5, 1.0)
    assert judge_fraction(6, 6, half).verdict == REPRODUCED  # 0.025^(1/6) = 0.54 > 0.5
    assert judge_fraction(0, 6, half).verdict == NOT_REPRODUCED
    v = judge_fraction(2, 2, half)
    assert v.verdict == INCONCLUSIVE and v.needed == 6  # every run at the boundary: 6 of 6 decide with certainty
    assert judge_fraction(1, 2, half).needed == math.inf  # half the runs: on the bound
    v = judge_fraction(3, 4, half)
    m = int(v.needed)  # at p = 0.75 the planned m decides with >= 80%, m − 1 with less (exact sums)
    def power(m):
        k = np.arange(m + 1)
        lows = np.array([fraction_interval(int(i), m)[0] for i in k])
        highs = np.array([fraction_interval(int(i), m)[1] for i in k])
        return float(stats.binom.pmf(k, m, 0.75)[(lows >= 0.5) | (highs < 0.5)].sum())
    assert power(m) >= 0.8 > power(m - 1)


def test_combine_is_a_logical_and():
    yes = Verdict(REPRODUCED, 1, (0.9, 1.1), BAND, 3)
    no = Verdict(NOT_REPRODUCED, 2, (1.9, 2.1), BAND, 3)
    open_ = Verdict(INCONCLUSIVE, 1.1, (0.9, 1.3), BAND, 3, needed=7)
    unknown = Verdict(INCONCLUSIVE, 1.1, (math.nan, math.nan), BAND, 1)
    skipped = Verdict(NOT_RUN, math.nan, (math.nan, math.nan), BAND, 0)
    assert combine([yes, yes, skipped]) == (REPRODUCED, None)
    assert combine([yes, open_, no]) == (NOT_REPRODUCED, None)
    assert combine([yes, open_, Verdict(INCONCLUSIVE, 1.1, (0.9, 1.3), BAND, 3, needed=12)]) == (INCONCLUSIVE, 12)
    assert combine([open_, unknown]) == (INCONCLUSIVE, None)
    assert combine([skipped]) == (NOT_RUN, None)
