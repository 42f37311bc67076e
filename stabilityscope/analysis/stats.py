"""Small statistics the analyses share: Student-t quantiles and intervals, least squares with an interval,
and numbers made JSON-safe.

One home for what :mod:`stabilityscope.analysis.scaling`, :mod:`~stabilityscope.analysis.calibration` and
:mod:`~stabilityscope.analysis.reproduction` all use, so that an
interval means the same in each of them.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

__all__ = ["jsonable", "ols", "origin_slope", "t_interval", "t_quantile"]


def t_quantile(confidence: float, dof: int) -> float:
    """The two-sided Student-t quantile of ``confidence`` at ``dof`` degrees of freedom (NaN when dof < 1)."""
    from scipy import stats

    return float(stats.t.ppf(0.5 + confidence / 2, dof)) if dof > 0 else math.nan


def t_interval(values: np.ndarray, confidence: float) -> tuple[float, float, float]:
    """(mean, low, high): the t interval of the mean of the finite ``values`` (NaN ends below two values)."""
    v = values[np.isfinite(values)]
    if len(v) == 0:
        return math.nan, math.nan, math.nan
    m = float(v.mean())
    if len(v) < 2:
        return m, math.nan, math.nan
    half = t_quantile(confidence, len(v) - 1) * float(v.std(ddof=1)) / math.sqrt(len(v))
    return m, m - half, m + half


def ols(x: np.ndarray, y: np.ndarray, confidence: float) -> dict[str, float]:
    """Least squares y = a + b·x: slope, intercept, standard error and t interval of the slope, R²."""
    n = len(x)
    out = dict(slope=math.nan, intercept=math.nan, slope_se=math.nan, lo=math.nan, hi=math.nan, r2=math.nan, n=n)
    if n < 2 or np.ptp(x) == 0:
        return out
    xm, ym = x.mean(), y.mean()
    sxx = float(np.sum((x - xm) ** 2))
    b = float(np.sum((x - xm) * (y - ym)) / sxx)
    a = float(ym - b * xm)
    res = y - (a + b * x)
    sst = float(np.sum((y - ym) ** 2))
    out.update(slope=b, intercept=a, r2=1.0 - float(np.sum(res ** 2)) / sst if sst > 0 else math.nan)
    if n > 2:  # a line through two points has no residual to estimate its error from
        se = math.sqrt(float(np.sum(res ** 2)) / (n - 2) / sxx)
        t = t_quantile(confidence, n - 2)
        out.update(slope_se=se, lo=b - t * se, hi=b + t * se)
    return out


def origin_slope(x: np.ndarray, y: np.ndarray, confidence: float) -> tuple[float, float, float]:
    """Least squares y = k·x through the origin: (k, low, high), the t interval with n − 1 degrees of freedom
    (NaN ends below two points; all NaN when x is all zero)."""
    n, sxx = len(x), float(np.sum(x * x))
    if n < 1 or sxx == 0:
        return math.nan, math.nan, math.nan
    k = float(np.sum(x * y)) / sxx
    if n < 2:
        return k, math.nan, math.nan
    half = t_quantile(confidence, n - 1) * math.sqrt(float(np.sum((y - k * x) ** 2)) / (n - 1) / sxx)
    return k, k - half, k + half


def jsonable(obj: Any) -> Any:
    """``obj`` with mappings, sequences, arrays and numpy scalars made plain; non-finite floats become None."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [jsonable(v) for v in obj.tolist()]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
