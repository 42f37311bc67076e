"""Verdicts that need positive evidence: an interval judged against a stated margin.

A claim is checked through one number with a confidence interval (a mean over seeds, a regression
exponent, a difference of two means, a fraction of runs). The verdict is a function of that interval
and of a **margin**, the range of values that would count as agreeing with the claim, fixed before
the measurement:

- **reproduced**: the whole interval lies inside the margin (for a two-sided margin this is the
  equivalence test TOST at level (1 − confidence)/2 on each side);
- **not reproduced**: the whole interval lies outside the margin;
- **inconclusive**: the interval straddles a bound of the margin. The verdict then carries the number
  of units (seeds, runs, checkpoints) with which a repeat of the experiment would give either of the
  first two verdicts with a stated probability (``power``, 80% by default), *if* the true value is the
  present estimate and the spread per unit is the present one. It is a planning number, not a
  promise; a true value on the bound itself can never be settled (``needed`` is infinite).

"No difference detected" is never a reproduction here: with two or three seeds a wide interval that
contains the claimed value is *inconclusive*, not evidence of agreement.

Example::

    import stabilityscope as ss

    m = ss.verdicts.Margin(0.85, 1.15, "the guideline's band, |J² − 1| <= 0.15")
    v = ss.verdicts.judge(1.063, (0.72, 1.40), m, n=2)             # mean s over 2 seeds, its 95% t interval
    v.verdict, v.needed                                            # ('inconclusive', 7): seeds for 80% power
    print(v.describe())
    ss.verdicts.judge_mean([1.089, 1.036], m)                      # the same from the seeds' values
    ss.verdicts.judge_fraction(2, 2, ss.verdicts.Margin(0.5, 1.0))  # 2 of 2 runs: inconclusive, 6 runs needed

Power of an interval rule (how ``needed`` is computed). An interval ``estimate ± t·σ/√n`` with
``dof = groups·n − params`` degrees of freedom (a mean: groups = 1, params = 1; a Welch difference
of two groups of n: groups = 2, params = 2; a least-squares slope through the origin: 1, 1; a line
with an intercept: 1, 2) has, for the true value θ, its upper end below a bound b with probability
P(T ≥ t) where T is noncentral t with ``dof`` degrees of freedom and noncentrality (b − θ)·√n/σ.
σ is read back from the interval given (σ = half-width·√n/t). Inside the margin both ends must hold
(their failure probabilities are added, a lower bound of the power); outside it only the nearer
bound matters. For a fraction, the interval is Clopper–Pearson's and the power is summed exactly over
the binomial outcomes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from stabilityscope.analysis.stats import t_quantile

__all__ = ["INCONCLUSIVE", "NOT_REPRODUCED", "NOT_RUN", "REPRODUCED", "VERDICTS", "Margin", "Verdict", "combine",
           "difference_interval", "fraction_interval", "judge", "judge_difference", "judge_fraction", "judge_mean",
           "mean_interval", "units_needed"]

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NOT_RUN = "reproduced", "not reproduced", "inconclusive", "not run"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NOT_RUN)
MAX_UNITS = 100_000  # beyond this ``needed`` is reported as infinite


@dataclass(frozen=True)
class Margin:
    """The values that agree with a claim: ``low <= value <= high`` (either end may be infinite).

    ``reason`` says where the bounds come from (the source paper's statement, or what a user would
    accept); reports print it beside the rule.
    """

    low: float = -math.inf
    high: float = math.inf
    reason: str = ""

    def __post_init__(self) -> None:
        if math.isnan(self.low) or math.isnan(self.high) or not self.low < self.high:
            raise ValueError(f"Margin({self.low!r}, {self.high!r}): a margin needs low < high (either may be "
                             f"infinite, e.g. Margin(0, math.inf) for 'positive').")

    def contains(self, low: float, high: float) -> bool:
        """Whether the interval [low, high] lies inside the margin."""
        return self.low <= low and high <= self.high

    def excludes(self, low: float, high: float) -> bool:
        """Whether the interval [low, high] lies wholly outside the margin."""
        return high < self.low or low > self.high

    def describe(self, digits: int = 3) -> str:
        f = (lambda v: f"{v:.{digits}g}")
        if math.isinf(self.low):
            return f"<= {f(self.high)}"
        if math.isinf(self.high):
            return f">= {f(self.low)}"
        return f"[{f(self.low)}, {f(self.high)}]"


@dataclass(frozen=True)
class Verdict:
    """One number's interval judged against a margin (module docstring)."""

    verdict: str  # reproduced, not reproduced, inconclusive, not run
    estimate: float
    interval: tuple[float, float]
    margin: Margin
    n: int  # units behind the interval
    unit: str = "seeds"
    needed: Optional[float] = None  # units for ``power`` (inconclusive only): math.inf when none suffice, None unknown
    power: float = 0.8
    confidence: float = 0.95
    why: str = ""

    def describe(self, digits: int = 3) -> str:
        """One sentence: the verdict, the interval against the margin, and (inconclusive) what would settle it."""
        f = (lambda v: "—" if not math.isfinite(v) else f"{v:.{digits}g}")
        lo, hi = self.interval
        unit = self.unit[:-1] if self.n == 1 and self.unit.endswith("s") else self.unit
        text = (f"{self.verdict}: {f(self.estimate)} ({self.confidence:.0%} interval {f(lo)}–{f(hi)}, {self.n} "
                f"{unit}) against the margin {self.margin.describe(digits)}")
        if self.verdict == INCONCLUSIVE:
            text += "; " + _needed_text(self.needed, self.unit, self.power)
        return text + (f" ({self.why})" if self.why else "")


def _needed_text(needed: Optional[float], unit: str, power: float) -> str:
    if needed is None:
        return f"the {unit} needed are unknown (no spread to plan with)"
    if math.isinf(needed):
        return f"no number of {unit} settles it (the estimate sits on a bound)"
    return f"about {int(needed)} {unit} would settle it with {power:.0%} power"


def _check(confidence: float, power: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence!r}: a confidence level lies in (0, 1), e.g. 0.95.")
    if not 0 < power < 1:
        raise ValueError(f"power={power!r}: a probability in (0, 1), e.g. 0.8.")


# ------------------------------------------------------------------------------------------ intervals


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float, int]:
    """(mean, low, high, n): the t interval of the mean of the finite ``values`` (NaN ends below 2 values)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return math.nan, math.nan, math.nan, 0
    m = float(v.mean())
    if len(v) < 2:
        return m, math.nan, math.nan, 1
    half = t_quantile(confidence, len(v) - 1) * float(v.std(ddof=1)) / math.sqrt(len(v))
    return m, m - half, m + half, len(v)


def difference_interval(a: Sequence[float], b: Sequence[float],
                        confidence: float = 0.95) -> tuple[float, float, float, int]:
    """(mean(a) − mean(b), low, high, n): Welch's t interval; n is the smaller group's size."""
    x, y = (np.asarray(v, dtype=float) for v in (a, b))
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    n = min(len(x), len(y))
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    d = float(x.mean() - y.mean())
    if n < 2:
        return d, math.nan, math.nan, n
    vx, vy = float(x.var(ddof=1)) / len(x), float(y.var(ddof=1)) / len(y)
    se2 = vx + vy
    if se2 == 0:
        return d, d, d, n
    dof = se2 ** 2 / (vx ** 2 / (len(x) - 1) + vy ** 2 / (len(y) - 1))  # Welch–Satterthwaite
    half = t_quantile(confidence, dof) * math.sqrt(se2)
    return d, d - half, d + half, n


def fraction_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Clopper–Pearson interval of a binomial fraction (exact, conservative)."""
    from scipy import stats

    if n <= 0:
        return math.nan, math.nan
    a = 1 - confidence
    lo = 0.0 if successes == 0 else float(stats.beta.ppf(a / 2, successes, n - successes + 1))
    hi = 1.0 if successes == n else float(stats.beta.ppf(1 - a / 2, successes + 1, n - successes))
    return lo, hi


# ----------------------------------------------------------------------------------------- the power


def _power(theta: float, sigma: float, margin: Margin, n: int, confidence: float, groups: int, params: int) -> float:
    """Probability that an interval from n units decides (inside or outside the margin) when the truth is θ."""
    from scipy import stats

    dof = groups * n - params
    if dof < 1:
        return 0.0
    t = t_quantile(confidence, dof)
    scale = math.sqrt(n) / sigma

    def beyond(distance: float) -> float:  # P(the interval's near end clears a bound ``distance`` away)
        return float(stats.nct.sf(t, dof, distance * scale))

    lo, hi = margin.low, margin.high
    if lo < theta < hi:  # both ends must stay inside: P(fail) <= P(fail low) + P(fail high)
        fail = sum(1 - beyond(d) for d in (theta - lo, hi - theta) if math.isfinite(d))
        return max(0.0, 1 - fail)
    if theta > hi:
        return beyond(theta - hi)
    if theta < lo:
        return beyond(lo - theta)
    return 0.0  # on a bound


def units_needed(estimate: float, sigma: float, margin: Margin, *, confidence: float = 0.95, power: float = 0.8,
                 groups: int = 1, params: int = 1) -> float:
    """The fewest units for which an interval decides with probability ``power`` (module docstring).

    ``sigma`` is the spread per unit (σ of one seed, or of one group member for a difference). Returns
    ``math.inf`` when no number suffices (the estimate on a bound, or more than 100,000 units).
    """
    _check(confidence, power)
    if not (math.isfinite(estimate) and math.isfinite(sigma)) or sigma < 0:
        return math.nan
    n_min = max(2, math.ceil((params + 1) / groups))  # at least one residual degree of freedom
    if sigma == 0:
        return float(n_min) if estimate not in (margin.low, margin.high) else math.inf

    def ok(n: int) -> bool:
        return _power(estimate, sigma, margin, n, confidence, groups, params) >= power

    hi = n_min
    while not ok(hi):  # power grows with n: double, then bisect
        if hi >= MAX_UNITS:
            return math.inf
        hi = min(2 * hi, MAX_UNITS)
    lo = max(n_min, hi // 2)
    if ok(lo):
        return float(lo)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return float(hi)


# -------------------------------------------------------------------------------------------- verdicts


def judge(estimate: float, interval: tuple[float, float], margin: Margin, n: int, *, confidence: float = 0.95,
          power: float = 0.8, groups: int = 1, params: int = 1, unit: str = "seeds", why: str = "",
          sigma: Optional[float] = None) -> Verdict:
    """The verdict of one interval against ``margin`` (module docstring).

    Args:
        estimate: the point estimate (used only to plan ``needed``).
        interval: its ``confidence`` interval, (low, high); NaN ends (fewer than two units) give
            ``inconclusive`` with ``needed`` unknown.
        margin: the values that agree with the claim.
        n: the units the interval rests on (seeds, runs, checkpoints).
        confidence, power: the interval's level, and the probability of a decision ``needed`` plans for.
        groups, params: the interval's degrees of freedom are ``groups·n − params`` (module docstring).
        unit: what ``n`` counts, for the text.
        why: a note carried into :meth:`Verdict.describe`.
        sigma: the spread per unit to plan with, when known (the interval's half-width is read back
            otherwise: half·√n/t).
    """
    _check(confidence, power)
    lo, hi = (float(v) for v in interval)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return Verdict(INCONCLUSIVE, float(estimate), (lo, hi), margin, int(n), unit, None, power, confidence,
                       why or f"no interval from {n} of them")
    if lo > hi:
        raise ValueError(f"interval={interval!r}: its low end lies above its high end.")
    if margin.contains(lo, hi):
        return Verdict(REPRODUCED, float(estimate), (lo, hi), margin, int(n), unit, None, power, confidence, why)
    if margin.excludes(lo, hi):
        return Verdict(NOT_REPRODUCED, float(estimate), (lo, hi), margin, int(n), unit, None, power, confidence, why)
    if sigma is None:
        t = t_quantile(confidence, groups * n - params)
        sigma = (hi - lo) / 2 * math.sqrt(n) / t if math.isfinite(t) else math.nan
    needed = units_needed(float(estimate), sigma, margin, confidence=confidence, power=power, groups=groups,
                          params=params)
    return Verdict(INCONCLUSIVE, float(estimate), (lo, hi), margin, int(n), unit,
                   None if math.isnan(needed) else needed, power, confidence, why)


def judge_mean(values: Sequence[float], margin: Margin, *, confidence: float = 0.95, power: float = 0.8,
               unit: str = "seeds", why: str = "") -> Verdict:
    """:func:`judge` of the t interval of the mean of ``values`` (one value per unit)."""
    m, lo, hi, n = mean_interval(values, confidence)
    if n == 0:
        return Verdict(NOT_RUN, math.nan, (math.nan, math.nan), margin, 0, unit, None, power, confidence,
                       why or "no values")
    v = np.asarray(values, dtype=float)
    sd = float(v[np.isfinite(v)].std(ddof=1)) if n >= 2 else None
    return judge(m, (lo, hi), margin, n, confidence=confidence, power=power, unit=unit, why=why, sigma=sd)


def judge_difference(a: Sequence[float], b: Sequence[float], margin: Margin, *, confidence: float = 0.95,
                     power: float = 0.8, unit: str = "seeds", why: str = "") -> Verdict:
    """:func:`judge` of Welch's interval of mean(a) − mean(b); ``needed`` counts units per group, planned with
    the spread √(s_a² + s_b²) of one pair and 2n − 2 degrees of freedom (the Welch degrees of freedom of the
    present interval can be far fewer when one group barely varies)."""
    d, lo, hi, n = difference_interval(a, b, confidence)
    if n == 0:
        return Verdict(NOT_RUN, math.nan, (math.nan, math.nan), margin, 0, unit, None, power, confidence,
                       why or "no values")
    x, y = (np.asarray(v, dtype=float) for v in (a, b))
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    sd = math.sqrt(float(x.var(ddof=1)) + float(y.var(ddof=1))) if n >= 2 else None
    return judge(d, (lo, hi), margin, n, confidence=confidence, power=power, groups=2, params=2, unit=unit, why=why,
                 sigma=sd)


def judge_fraction(successes: int, n: int, margin: Margin, *, confidence: float = 0.95, power: float = 0.8,
                   unit: str = "runs", why: str = "") -> Verdict:
    """The verdict of a fraction of units (``successes`` of ``n``), Clopper–Pearson interval against ``margin``.

    ``needed`` is exact: the fewest n for which the binomial outcomes at the present fraction give a
    deciding interval with probability ``power`` (searched up to 2,000).
    """
    from scipy import stats

    _check(confidence, power)
    if n <= 0:
        return Verdict(NOT_RUN, math.nan, (math.nan, math.nan), margin, 0, unit, None, power, confidence,
                       why or f"no {unit}")
    lo, hi = fraction_interval(successes, n, confidence)
    p = successes / n
    if margin.contains(lo, hi) or margin.excludes(lo, hi):
        verdict = REPRODUCED if margin.contains(lo, hi) else NOT_REPRODUCED
        return Verdict(verdict, p, (lo, hi), margin, n, unit, None, power, confidence, why)
    needed = math.inf
    on_bound = any(0 < b < 1 and p == b for b in (margin.low, margin.high))  # never settled there
    for m in range(1, 2001) if not on_bound else ():
        k = np.arange(m + 1)
        a = 1 - confidence
        low = np.where(k == 0, 0.0, stats.beta.ppf(a / 2, np.maximum(k, 1), m - k + 1))
        high = np.where(k == m, 1.0, stats.beta.ppf(1 - a / 2, k + 1, np.maximum(m - k, 1)))
        decides = ((margin.low <= low) & (high <= margin.high)) | (high < margin.low) | (low > margin.high)
        if float(stats.binom.pmf(k, m, p)[decides].sum()) >= power:
            needed = float(m)
            break
    return Verdict(INCONCLUSIVE, p, (lo, hi), margin, n, unit, needed, power, confidence, why)


def combine(parts: Sequence[Verdict]) -> tuple[str, Optional[float]]:
    """The verdict of a claim made of several parts that must all hold (a logical AND).

    ``not reproduced`` when any part is; ``reproduced`` when every part is; otherwise ``inconclusive``
    with the largest ``needed`` among the undecided parts (None if any of them is unknown). Parts that
    were not run are ignored unless all are.
    """
    run = [p for p in parts if p.verdict != NOT_RUN]
    if not run:
        return NOT_RUN, None
    if any(p.verdict == NOT_REPRODUCED for p in run):
        return NOT_REPRODUCED, None
    if all(p.verdict == REPRODUCED for p in run):
        return REPRODUCED, None
    open_parts = [p for p in run if p.verdict == INCONCLUSIVE]
    if any(p.needed is None for p in open_parts):
        return INCONCLUSIVE, None
    return INCONCLUSIVE, max(p.needed for p in open_parts)
