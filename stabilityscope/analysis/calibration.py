"""Calibration of the guideline's laws on measured runs: J² growth against the rate, and decay plateaus.

The guideline (:mod:`stabilityscope.analysis.guideline`) needs two laws of the canonical network's
hidden layer, and this module measures both on sweeps (the presets ``experiment=calibrate_growth``
and ``experiment=calibrate_decay``) instead of assuming them:

1. **growth**: the slope A of J² per epoch in the ordered part against the rate r = η/((1−α)B),
   each run's A fitted over one **common window of J²** (``j2_window``, default 0.30–0.60, at least 3
   checkpoints in it): J² rises faster than the later line in a transient right after initialisation
   (measured on the calibration sweep: the line over the window starts 0.015–0.055 above J²(0) = 0.25),
   and a fit over each run's whole ordered part weighs that transient by how little of the path a run
   covers: A comes out 14% high at 0.25×, 2% at 1×–8× (a bias that bends the exponent). The window starts above
   the transient and ends well before the edge; runs that do not reach 3 checkpoints in it have no A
   (the slowest and the fastest rates). The law is fitted in three forms, each a hypothesis:

   - ``linear``  A = k·(r/r_ref)                     (EOC-training's A = C·η/((1−α)B))
   - ``power``   A = k·(r/r_ref)^p
   - ``affine``  A = a₀ + k·(r/r_ref)                (a rate-independent drift plus diffusion)

   Its **validity range** is the widest contiguous window of measured rates, holding the rate nearest
   the reference r_ref = 1.25e-3, on which the best form fitted on that window (lowest AIC of the log
   residuals) puts every run's A within ``tolerance`` (relative); every window is tried, and that form
   on that window is the law. Each form's own range (that form alone, judged the same way) is
   reported beside it (``GrowthCalibration.form_validity``): EOC-training's linear law has its own.
   Past the edge the slope changes; each run's slope beyond the edge (χ >= 1) is reported next to it.
2. **plateau**: J²∞ against weight decay wd and rate, fitted as

       log J²∞ = log K − q·log(wd/wd_ref) + s·log(r/r_ref)      (wd_ref = the model's c/2)

   over saturated runs only: a run counts as saturated when it lasted at least three relaxation
   times τ, with τ **measured** by fitting J²(t) = P + (J²(0) − P)·exp(−t/τ) to the run (the model's
   1/(2·wd·ρ) is shown beside it). The plateau itself is the mean J² over the last ``plateau_fraction``
   of the run (model-free). The toolkit's model predicts q = 1 and s = 0 (the plateau c/(2·wd) does not
   depend on the rate, which is what lets τ-scaling shorten decay runs); the fit says whether that holds.
   The decay whose plateau is the edge, λ*(r) = wd_ref·(K·(r/r_ref)^s)^(1/q), follows; at every
   measured rate λ* is also found without the law, by interpolating the seeds' mean plateaus
   (:func:`stabilityscope.analysis.decay.decay_analysis`, with seed and bootstrap intervals).

EOC-training's claim that the best final test loss comes at the decay whose plateau is the edge is
checked per rate and run length (final losses compare only between runs trained as long):
:attr:`Calibration.eoc_claim` holds, per rate and length, the decay with the lowest mean final test
loss, the grid decay nearest λ*, both losses with t intervals over seeds and Welch's test of their
difference.

The measured laws are stored as JSON (:class:`CalibratedLaws`, with their provenance) beside the runs
table they were fitted on (:mod:`stabilityscope.analysis.runs_table`), from which ``calibrate(<table>)``
rebuilds them exactly; the canonical network's are packaged (``stabilityscope/analysis/laws/``, laws and
table) and :func:`load_laws` reads them.
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence, Union

import numpy as np

from stabilityscope.analysis.canonical import CANONICAL_BATCH, CANONICAL_C, CANONICAL_LR, CANONICAL_MOMENTUM
from stabilityscope.analysis.collection import Source
from stabilityscope.analysis.decay import EXCLUDED_STATUSES, decay_analysis
from stabilityscope.analysis.stats import jsonable, t_interval, t_quantile

if TYPE_CHECKING:
    import pandas as pd

    from stabilityscope.analysis.scaling import RunCurve, SweepAnalysis

__all__ = ["CalibratedLaws", "Calibration", "GROWTH_FORMS", "GrowthLaw", "LAWS_DIR", "PlateauLaw", "REFERENCE_RATE",
           "REFERENCE_WEIGHT_DECAY", "calibrate", "fit_growth_law", "fit_plateau_law", "fit_relaxation", "load_laws"]

REFERENCE_RATE = CANONICAL_LR / ((1 - CANONICAL_MOMENTUM) * CANONICAL_BATCH)  # 1.25e-3, EOC-training's reference run
REFERENCE_WEIGHT_DECAY = CANONICAL_C / 2  # the model's wd* = c/2 ≈ 9.25e-5 (PyTorch convention)
GROWTH_FORMS = ("linear", "power", "affine")
LAWS_DIR = Path(__file__).with_name("laws")
# A packaged calibration is a folder with what task=calibrate writes: laws.json and the runs table it was fitted on
DEFAULT_LAWS = LAWS_DIR / "fmnist_fc-fashion_mnist" / "laws.json"
DEFAULT_TABLE = LAWS_DIR / "fmnist_fc-fashion_mnist" / "runs.json"
# The common stretch of J² over which every run's growth slope A is fitted: above the initial transient
# (J² rises faster in its first ~0.02–0.05 from 0.25) and well before the edge (see the module docstring).
DEFAULT_J2_WINDOW = (0.30, 0.60)
RATE_DIGITS = 6  # runs whose rates agree to this many significant digits share a rate


# ------------------------------------------------------------------------------------------------ laws


def within_range(rate: Any, bounds: tuple[float, float]) -> Any:
    """Whether ``rate`` (a number or an array) lies in ``bounds``, with a relative slack of 1e-9 so that a
    rate computed from a range's own end points counts as inside."""
    lo, hi = bounds
    r = np.asarray(rate, dtype=float)
    inside = (r >= lo * (1 - 1e-9)) & (r <= hi * (1 + 1e-9))
    return bool(inside) if inside.ndim == 0 else inside


@dataclass(frozen=True)
class GrowthLaw:
    """A of J² per epoch (ordered part) against the rate r = η/((1−α)B), at ``n_train`` examples.

    A per epoch counts the n/B steps of an epoch, so at another training-set size it is scaled by
    n/n_train (an assumption: the calibration used one n).
    """

    form: str  # linear, power or affine
    k: float  # A at the reference rate from the rate term (per epoch)
    exponent: float  # p (1 for linear and affine)
    intercept: float  # a₀ per epoch (0 unless affine)
    rate_ref: float
    n_train: int
    validity: tuple[float, float]  # the rates (η/((1−α)B)) where every calibration run agreed within tolerance
    tolerance: float
    j2_window: Optional[tuple[float, float]] = None  # the stretch of J² every run's A was fitted over (None: each
    # run's whole ordered part, the packaged laws before 0.2)

    def slope(self, rate: Any, n_train: Any = None) -> np.ndarray:
        """The law's A per epoch at these rates (a prediction)."""
        x = np.asarray(rate, dtype=float) / self.rate_ref
        a = self.intercept + self.k * x ** self.exponent
        return a * (1.0 if n_train is None else np.asarray(n_train, dtype=float) / self.n_train)

    def rate_for(self, slope: float, n_train: Optional[int] = None) -> float:
        """The rate at which the law's A equals ``slope`` (NaN when no positive rate gives it)."""
        a = slope / ((n_train / self.n_train) if n_train else 1.0) - self.intercept
        if a <= 0:
            return math.nan
        return self.rate_ref * (a / self.k) ** (1.0 / self.exponent)

    def within(self, rate: float) -> bool:
        return within_range(rate, self.validity)

    def describe(self) -> str:
        r = "r/r_ref"
        body = {"linear": f"A = {self.k:.4g}·({r})", "power": f"A = {self.k:.4g}·({r})^{self.exponent:.3f}",
                "affine": f"A = {self.intercept:.4g} + {self.k:.4g}·({r})"}[self.form]
        window = (f", A fitted over J² in {self.j2_window[0]:g}–{self.j2_window[1]:g}" if self.j2_window
                  else ", A fitted over each run's ordered part")
        return (f"{body} per epoch (r_ref = {self.rate_ref:.4g}, n = {self.n_train}{window}); valid for r in "
                f"{self.validity[0]:.3g}–{self.validity[1]:.3g} ({self.validity[0] / self.rate_ref:.3g}×–"
                f"{self.validity[1] / self.rate_ref:.3g}× the reference) within {self.tolerance:.0%}")


@dataclass(frozen=True)
class PlateauLaw:
    """J²∞ = K·(wd/wd_ref)^(−q)·(r/r_ref)^s, fitted on saturated decay runs."""

    K: float
    q: float
    s: float
    wd_ref: float
    rate_ref: float
    rate_range: tuple[float, float]  # the rates of the runs it was fitted on
    weight_decay_range: tuple[float, float]
    K_ci: tuple[float, float] = (math.nan, math.nan)
    q_ci: tuple[float, float] = (math.nan, math.nan)
    s_ci: tuple[float, float] = (math.nan, math.nan)
    # covariance of the fitted (log K, q[, s]) and the fit's residual degrees of freedom, for intervals
    cov: tuple[tuple[float, ...], ...] = ()
    dof: int = 0

    def plateau(self, weight_decay: Any, rate: Any) -> np.ndarray:
        """The law's J²∞ (a prediction)."""
        wd, r = np.asarray(weight_decay, dtype=float), np.asarray(rate, dtype=float)
        return self.K * (wd / self.wd_ref) ** (-self.q) * (r / self.rate_ref) ** self.s

    def decay_for(self, rate: float, plateau: float = 1.0) -> float:
        """The weight decay whose predicted plateau is ``plateau`` at this rate (λ* at plateau 1)."""
        return self.wd_ref * (self.K * (rate / self.rate_ref) ** self.s / plateau) ** (1.0 / self.q)

    def decay_interval(self, rate: float, plateau: float = 1.0, confidence: float = 0.95) -> tuple[float, float]:
        """A t interval of :meth:`decay_for` from the fit's covariance (delta method in log λ*; a
        prediction's uncertainty, not a measurement's). NaN without a covariance or residual freedom.

        log λ* = log wd_ref + (log K + s·log(r/r_ref) − log P)/q, so its gradient in (log K, q, s) is
        (1/q, −(log λ* − log wd_ref)/q, log(r/r_ref)/q).
        """
        if not self.cov or self.dof < 1:
            return math.nan, math.nan
        x = math.log(rate / self.rate_ref)
        g = (math.log(self.K) + self.s * x - math.log(plateau)) / self.q  # log(λ*/wd_ref)
        grad = np.array([1 / self.q, -g / self.q, x / self.q][:len(self.cov)])
        half = t_quantile(confidence, self.dof) * math.sqrt(float(grad @ np.asarray(self.cov, dtype=float) @ grad))
        centre = math.log(self.wd_ref) + g
        return math.exp(centre - half), math.exp(centre + half)

    def within(self, rate: float) -> bool:
        return within_range(rate, self.rate_range)

    def describe(self) -> str:
        rate = (f"·(r/{self.rate_ref:.4g})^{self.s:.3f}" if math.isfinite(self.s_ci[0])
                else " (rate exponent not fitted: the runs do not separate rate from decay)")
        return (f"J²∞ = {self.K:.4g}·(wd/{self.wd_ref:.4g})^−{self.q:.3f}{rate}, fitted for "
                f"r in {self.rate_range[0]:.3g}–{self.rate_range[1]:.3g} and wd in {self.weight_decay_range[0]:.3g}–"
                f"{self.weight_decay_range[1]:.3g}")


@dataclass(frozen=True)
class CalibratedLaws:
    """The growth and plateau laws the guideline uses, with where they were measured."""

    growth: GrowthLaw
    plateau: Optional[PlateauLaw]  # None: the decay runs gave no plateau law (the guideline then needs a λ*)
    provenance: dict[str, Any]  # dataset, network, date, runs, commands, seeds

    def to_dict(self) -> dict[str, Any]:
        return jsonable({"growth": asdict(self.growth), "plateau": asdict(self.plateau) if self.plateau else None,
                          "provenance": self.provenance})

    def save(self, path: Union[str, Path]) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CalibratedLaws":
        g = dict(d["growth"])
        g["validity"] = tuple(g["validity"])
        if g.get("j2_window") is not None:
            g["j2_window"] = tuple(g["j2_window"])
        p = dict(d["plateau"]) if d.get("plateau") is not None else None
        for key in ("rate_range", "weight_decay_range", "K_ci", "q_ci", "s_ci"):
            if p is not None and key in p:
                p[key] = tuple(math.nan if v is None else v for v in p[key])
        if p is not None and "cov" in p:
            p["cov"] = tuple(tuple(row) for row in p["cov"])
        return cls(GrowthLaw(**g), PlateauLaw(**p) if p is not None else None, dict(d.get("provenance", {})))


def load_laws(path: Union[str, Path, None] = None) -> CalibratedLaws:
    """Calibrated laws from a ``laws.json`` (``task=calibrate`` writes one), by default the packaged
    canonical ones (the 784-784(tanh)-10 network on Fashion-MNIST).

    Raises:
        ValueError: the file is missing or is not a laws file.
    """
    p = DEFAULT_LAWS if path is None else Path(path)
    if p.is_dir():
        p = p / "laws.json"
    if not p.is_file():
        raise ValueError(f"No calibrated laws at {str(p)!r}: pass a laws.json written by task=calibrate (or its "
                         f"folder), or None for the packaged canonical laws.")
    try:
        return CalibratedLaws.from_dict(json.loads(p.read_text(encoding="utf-8")))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{str(p)!r} is not a calibrated-laws file ({type(exc).__name__}: {exc}); task=calibrate "
                         f"writes one as laws.json.") from None


# ------------------------------------------------------------------------------------------- growth


@dataclass(frozen=True)
class GrowthFit:
    """One candidate form fitted to (rate, A)."""

    form: str
    k: float
    exponent: float
    intercept: float
    n_runs: int
    rms_log: float  # RMS of log(A/Â): the relative scatter around the form
    aic: float
    k_ci: tuple[float, float]
    exponent_ci: tuple[float, float]
    intercept_ci: tuple[float, float]

    def law(self, rate_ref: float, n_train: int, validity: tuple[float, float], tolerance: float,
            j2_window: Optional[tuple[float, float]] = None) -> GrowthLaw:
        return GrowthLaw(self.form, self.k, self.exponent, self.intercept, rate_ref, n_train, validity, tolerance,
                         j2_window)


def _fit_form(form: str, x: np.ndarray, A: np.ndarray, confidence: float) -> Optional[GrowthFit]:
    """Least squares of one form in log space (relative errors), x = r/r_ref. None when underdetermined."""
    n = len(x)
    y = np.log(A)
    if form == "linear":
        if n < 1:
            return None
        d = y - np.log(x)  # log k for each run
        logk = float(d.mean())
        res = d - logk
        se = float(d.std(ddof=1)) / math.sqrt(n) if n > 1 else math.nan
        t = t_quantile(confidence, n - 1)
        k, p, a0, kci, pci, aci, npar = math.exp(logk), 1.0, 0.0, (math.exp(logk - t * se), math.exp(logk + t * se)), \
            (1.0, 1.0), (0.0, 0.0), 1
    elif form == "power":
        if n < 3 or np.ptp(np.log(x)) == 0:
            return None
        X = np.column_stack([np.ones(n), np.log(x)])
        beta, *_ = np.linalg.lstsq(X, y, rcond=None)
        res = y - X @ beta
        cov = float(res @ res) / (n - 2) * np.linalg.inv(X.T @ X)
        t = t_quantile(confidence, n - 2)
        se0, se1 = math.sqrt(cov[0, 0]), math.sqrt(cov[1, 1])
        k, p, a0, npar = math.exp(beta[0]), float(beta[1]), 0.0, 2
        kci = (math.exp(beta[0] - t * se0), math.exp(beta[0] + t * se0))
        pci, aci = (p - t * se1, p + t * se1), (0.0, 0.0)
    elif form == "affine":
        if n < 3 or np.ptp(x) == 0:
            return None
        # relative residuals (A − Â)/A: rows weighted by 1/A, which log-space least squares approximates
        W = 1.0 / A
        X = np.column_stack([np.ones(n), x]) * W[:, None]
        beta, *_ = np.linalg.lstsq(X, A * W, rcond=None)
        fitted = beta[0] + beta[1] * x
        if (fitted <= 0).any() or beta[1] <= 0:
            return None
        res = y - np.log(fitted)
        cov = float(np.sum((A * W - X @ beta) ** 2)) / (n - 2) * np.linalg.inv(X.T @ X)
        t = t_quantile(confidence, n - 2)
        se0, se1 = math.sqrt(cov[0, 0]), math.sqrt(cov[1, 1])
        k, p, a0, npar = float(beta[1]), 1.0, float(beta[0]), 2
        kci, pci, aci = (k - t * se1, k + t * se1), (1.0, 1.0), (a0 - t * se0, a0 + t * se0)
    else:
        raise ValueError(f"unknown growth form {form!r}; allowed: {', '.join(GROWTH_FORMS)}")
    rss = float(np.sum(res ** 2))
    aic = n * math.log(max(rss, 1e-300) / n) + 2 * npar
    return GrowthFit(form, k, p, a0, n, math.sqrt(rss / n), aic, kci, pci, aci)


def _rate_key(rate: Any) -> np.ndarray:
    return np.asarray([float(f"{r:.{RATE_DIGITS}g}") for r in np.atleast_1d(np.asarray(rate, dtype=float))])


@dataclass
class GrowthCalibration:
    """The growth law, every candidate form, and the runs with their ratio to the law."""

    law: Optional[GrowthLaw]
    fits: dict[str, GrowthFit]  # form -> fit over the final validity range
    fits_all: dict[str, GrowthFit]  # form -> fit over every run
    runs: "pd.DataFrame"  # rate, A, series, ratio_to_law, A_chaotic, ...
    series_exponents: dict[str, tuple[float, float, float, int]]  # variable -> (p, lo, hi, runs) within a series
    notes: list[str] = field(default_factory=list)
    form_validity: dict[str, tuple[float, float]] = field(default_factory=dict)  # each form's own validity range


def _series(row: Mapping[str, Any]) -> str:
    """Which of η, α, B a growth run varies from the reference (``reference`` when none, ``mixed`` when several)."""
    diff = [name for name, key, ref in (("lr", "lr", CANONICAL_LR), ("momentum", "momentum", CANONICAL_MOMENTUM),
                                        ("batch_size", "batch_size", CANONICAL_BATCH))
            if not math.isclose(float(row[key]), ref, rel_tol=1e-9, abs_tol=1e-12)]
    return diff[0] if len(diff) == 1 else ("reference" if not diff else "mixed")


def fit_growth_law(runs: "pd.DataFrame", *, rate_ref: float = REFERENCE_RATE, tolerance: float = 0.15,
                   confidence: float = 0.95, forms: Sequence[str] = GROWTH_FORMS,
                   j2_window: Optional[tuple[float, float]] = None) -> GrowthCalibration:
    """Fit A against the rate (module docstring, step 1).

    Args:
        runs: one row per run with ``rate``, ``A`` (> 0), ``n_train`` and optionally ``lr``, ``momentum``,
            ``batch_size`` (for the per-series exponents) and ``A_chaotic``.
        rate_ref: the reference rate the law is written around.
        tolerance: relative agreement that defines the validity range.
        confidence: level of the intervals.
        forms: the candidate forms.
        j2_window: the stretch of J² the runs' A were fitted over, recorded in the law.
    """
    ok = runs[np.isfinite(runs["A"].astype(float)) & (runs["A"].astype(float) > 0)].copy()
    notes: list[str] = []
    if len(ok) < 3 or ok["rate"].nunique() < 2:  # no law; the report still lists the runs, A at their own n
        ok["A_at_n"] = ok["A"].astype(float)
        return GrowthCalibration(None, {}, {}, ok, {}, [f"{len(ok)} run(s) with a positive slope at "
                                                        f"{ok['rate'].nunique()} rate(s): a growth law needs >= 3 runs "
                                                        "at >= 2 rates"])
    if {"lr", "momentum", "batch_size"} <= set(ok.columns):
        ok["series"] = [_series(r) for r in ok.to_dict("records")]
    ns = ok["n_train"].unique()
    if len(ns) > 1:
        notes.append(f"the runs differ in training-set size ({', '.join(f'{v:g}' for v in ns)}): A is rescaled to "
                     f"n = {int(ns.max())} by n/B steps per epoch")
    n_train = int(ns.max())
    ok["A_at_n"] = ok["A"].astype(float) * n_train / ok["n_train"].astype(float)
    x_all, A_all = ok["rate"].to_numpy(float) / rate_ref, ok["A_at_n"].to_numpy(float)
    fits_all = {f: g for f in forms if (g := _fit_form(f, x_all, A_all, confidence)) is not None}
    # The validity range: the widest contiguous window of measured rates, holding the rate nearest the
    # reference, on which the best form (lowest AIC, fitted on that window) puts every run within
    # tolerance. Every window is tried (a handful of rates), so a poor fit over all runs cannot trap it.
    keys = _rate_key(ok["rate"])
    rates = ok["rate"].to_numpy(float)
    chosen = _widest_window(keys, x_all, A_all, rates, forms, rate_ref, n_train, tolerance, confidence)
    # each form's own range, judged the same way with that form alone (the linear law's is EOC-training's)
    form_validity = {}
    for f in forms:
        own = _widest_window(keys, x_all, A_all, rates, (f,), rate_ref, n_train, tolerance, confidence)
        if own is not None:
            form_validity[f] = (float(rates[own[1]].min()), float(rates[own[1]].max()))
    if chosen is None:
        notes.append(f"no window of measured rates around the reference is fitted by any form within {tolerance:.0%}: "
                     f"no law")
        return GrowthCalibration(None, {}, fits_all, ok, {}, notes, form_validity)
    _, use, fits = chosen
    best = min(fits.values(), key=lambda g: g.aic)
    validity = (float(ok["rate"][use].min()), float(ok["rate"][use].max()))
    law = best.law(rate_ref, n_train, validity, tolerance, j2_window)
    ok["ratio_to_law"] = A_all / law.slope(ok["rate"].to_numpy(float))
    ok["in_validity"] = use
    series_exp: dict[str, tuple[float, float, float, int]] = {}
    if "series" in ok.columns:
        from stabilityscope.analysis.scaling import power_law_x

        for var in ("lr", "momentum", "batch_size"):
            g = ok[(ok["series"] == var) | (ok["series"] == "reference")]
            g = g[g["in_validity"]]
            if g[var].nunique() >= 2 and len(g) >= 3:
                f = _fit_form("power", power_law_x(var, g[var].to_numpy()), g["A_at_n"].to_numpy(float), confidence)
                if f is not None:
                    series_exp[var] = (f.exponent, f.exponent_ci[0], f.exponent_ci[1], len(g))
    return GrowthCalibration(law, fits, fits_all, ok, series_exp, notes, form_validity)


def _widest_window(keys: np.ndarray, x: np.ndarray, A: np.ndarray, rates: np.ndarray, forms: Sequence[str],
                   rate_ref: float, n_train: int, tolerance: float, confidence: float
                   ) -> Optional[tuple[tuple[int, int, float], np.ndarray, dict[str, GrowthFit]]]:
    """The widest contiguous window of measured rates holding the one nearest ``rate_ref`` on which the best of
    ``forms`` (lowest AIC, fitted on that window) puts every run within ``tolerance``: (score, runs used, fits)."""
    uniq = np.unique(keys)
    anchor = int(np.argmin(np.abs(np.log(uniq / rate_ref))))
    chosen: Optional[tuple[tuple[int, int, float], np.ndarray, dict[str, GrowthFit]]] = None
    for i in range(anchor + 1):
        for j in range(anchor, len(uniq)):
            use = (keys >= uniq[i]) & (keys <= uniq[j])
            fits = {f: g for f in forms if (g := _fit_form(f, x[use], A[use], confidence)) is not None}
            if not fits:
                continue
            best = min(fits.values(), key=lambda g: g.aic)
            law = best.law(rate_ref, n_train, (uniq[i], uniq[j]), tolerance)
            if np.all(np.abs(A[use] / law.slope(rates[use]) - 1) <= tolerance):
                score = (j - i, int(use.sum()), -best.aic)
                if chosen is None or score > chosen[0]:
                    chosen = (score, use, fits)
    return chosen


# ------------------------------------------------------------------------------------------ plateau


def fit_relaxation(epochs: np.ndarray, j2: np.ndarray) -> tuple[float, float, float]:
    """(P, τ, rms): J²(t) = P + (J²(0) − P)·exp(−t/τ) fitted by least squares, J²(0) the first checkpoint.

    τ is in the units of ``epochs``; a curve still rising without bend gets a τ beyond its length (so
    it does not count as saturated); NaNs when the fit fails.
    """
    from scipy.optimize import curve_fit

    t, y = np.asarray(epochs, float), np.asarray(j2, float)
    keep = np.isfinite(t) & np.isfinite(y)
    t, y = t[keep], y[keep]
    if len(t) < 4 or t[-1] <= t[0]:
        return math.nan, math.nan, math.nan
    y0, span = y[0], t[-1] - t[0]

    def model(tt: np.ndarray, P: float, log_tau: float) -> np.ndarray:
        return P + (y0 - P) * np.exp(-(tt - t[0]) / np.exp(log_tau))

    best: Optional[tuple[float, float, float]] = None
    for guess in (0.1, 0.3, 1.0, 3.0):  # a few starts: the least squares in τ has flat stretches
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # τ bounded to 1000 run lengths: a curve without bend ends at the bound (not saturated)
                (P, lt), _ = curve_fit(model, t, y, p0=(y[-1] + (y[-1] - y0) * 0.1, math.log(guess * span)),
                                       bounds=((-1e6, math.log(span / 1e3)), (1e6, math.log(span * 1e3))), maxfev=4000)
        except (RuntimeError, ValueError):
            continue
        rms = float(np.sqrt(np.mean((model(t, P, lt) - y) ** 2)))
        if math.isfinite(rms) and (best is None or rms < best[2]):
            best = (float(P), float(math.exp(lt)), rms)
    return best if best is not None else (math.nan, math.nan, math.nan)


@dataclass
class PlateauCalibration:
    """The plateau law, the decay runs with their measured relaxation, λ* per rate and the EOC claim."""

    law: Optional[PlateauLaw]
    runs: "pd.DataFrame"
    lambda_star: "pd.DataFrame"  # one row per rate: λ* interpolated (seed CI, bootstrap CI) and the law's
    eoc_claim: "pd.DataFrame"  # one row per (rate, run length): best decay vs the decay nearest λ*
    r2: float
    notes: list[str] = field(default_factory=list)


def fit_plateau_law(runs: "pd.DataFrame", *, rate_ref: float = REFERENCE_RATE, wd_ref: float = REFERENCE_WEIGHT_DECAY,
                    confidence: float = 0.95) -> tuple[Optional[PlateauLaw], float]:
    """log J²∞ = log K − q·log(wd/wd_ref) + s·log(r/r_ref) over rows with ``weight_decay`` > 0, ``rate``
    and ``j2_plateau`` (saturated runs only: the caller filters). Returns (law or None, R²)."""
    ok = runs[(runs["weight_decay"] > 0) & np.isfinite(runs["j2_plateau"].astype(float)) & (runs["j2_plateau"] > 0)]
    if len(ok) < 3 or ok["weight_decay"].nunique() < 2:
        return None, math.nan
    cols = [np.ones(len(ok)), -np.log(ok["weight_decay"].to_numpy(float) / wd_ref)]
    rate_col = np.log(ok["rate"].to_numpy(float) / rate_ref)
    # the rate term only when the runs separate it from the decay (2 decays each at its own rate do not)
    vary_rate = np.linalg.matrix_rank(np.column_stack(cols + [rate_col])) == 3
    if vary_rate:
        cols.append(rate_col)
    X, y = np.column_stack(cols), np.log(ok["j2_plateau"].to_numpy(float))
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    res = y - X @ beta
    dof = len(y) - X.shape[1]
    nan2 = (math.nan, math.nan)
    cis = [nan2] * X.shape[1]
    cov: tuple[tuple[float, ...], ...] = ()
    if dof > 0:
        cov_matrix = float(res @ res) / dof * np.linalg.inv(X.T @ X)
        cov = tuple(tuple(float(v) for v in row) for row in cov_matrix)
        se = np.sqrt(np.diag(cov_matrix))
        t = t_quantile(confidence, dof)
        cis = [(float(b - t * e), float(b + t * e)) for b, e in zip(beta, se)]
    sst = float(np.sum((y - y.mean()) ** 2))
    r2 = 1 - float(res @ res) / sst if sst > 0 else math.nan
    s = float(beta[2]) if vary_rate else 0.0
    law = PlateauLaw(math.exp(beta[0]), float(beta[1]), s, wd_ref, rate_ref,
                     (float(ok["rate"].min()), float(ok["rate"].max())),
                     (float(ok["weight_decay"].min()), float(ok["weight_decay"].max())),
                     (math.exp(cis[0][0]), math.exp(cis[0][1])), cis[1], cis[2] if vary_rate else nan2, cov,
                     max(dof, 0))
    return law, r2


def _law_interval(law: Optional[PlateauLaw], rate: float, confidence: float) -> dict[str, float]:
    lo, hi = law.decay_interval(rate, confidence=confidence) if law else (math.nan, math.nan)
    return {"law_ci_low": lo, "law_ci_high": hi}


def _plateau_calibration(runs: "pd.DataFrame", curves: Mapping[str, "RunCurve"], confidence: float, n_boot: int,
                         seed: int, rates: Optional[tuple[float, float]] = None) -> PlateauCalibration:
    import pandas as pd
    from scipy import stats

    dec = runs[(runs["weight_decay"] > 0) & ~runs["status"].isin(EXCLUDED_STATUSES)].copy()
    notes: list[str] = []
    empty = pd.DataFrame()
    if dec.empty:
        return PlateauCalibration(None, dec, empty, empty, math.nan, ["no decay runs (optim.weight_decay > 0)"])
    P, tau, rms = [], [], []
    for label in dec["run"]:
        c = curves.get(label)
        fit = fit_relaxation(c.epochs, c.j2) if c is not None else (math.nan,) * 3
        P.append(fit[0]); tau.append(fit[1]); rms.append(fit[2])  # noqa: E702
    dec["plateau_fit"], dec["tau_measured"], dec["relaxation_rms"] = P, tau, rms
    dec["tau_model"] = dec["relaxation_epochs"]  # the model's 1/(2·wd·ρ)
    dec["saturated"] = dec["last_epoch"].astype(float) >= 3 * dec["tau_measured"].astype(float)
    short = dec[~dec["saturated"]]
    if len(short):
        notes.append(f"{len(short)} of {len(dec)} decay runs lasted less than 3 measured relaxation times (left out of "
                     "the plateau law): " + ", ".join(f"{r.run} (wd {r.weight_decay:g}, rate {r.rate:.3g}: "
                                                    f"{r.last_epoch:g} epochs, τ = {r.tau_measured:.3g})"
                                                    for r in short.itertuples()))
    # the law is fitted inside the growth law's validity range only: beyond it J² runs away and a "plateau"
    # is a chaotic level, not the balance of growth and decay the guideline needs
    dec["in_growth_range"] = True if rates is None else within_range(dec["rate"], rates)
    outside = dec[~dec["in_growth_range"]]
    if len(outside):
        notes.append(f"{len(outside)} decay runs at rates outside the growth law's validity range (left out of the "
                     "plateau law): rates "
                     f"{', '.join(f'{r / REFERENCE_RATE:.3g}×' for r in sorted(outside['rate'].unique()))}")
    law, r2 = fit_plateau_law(dec[dec["saturated"] & dec["in_growth_range"]], confidence=confidence)
    if law is None:
        notes.append("no plateau law: fewer than 3 saturated runs at 2 or more decays inside the growth law's range")
    dec["plateau_law"] = law.plateau(dec["weight_decay"], dec["rate"]) if law else math.nan
    dec["rate_key"] = _rate_key(dec["rate"])
    star_rows, claim_rows = [], []
    for rk, g in dec.groupby("rate_key"):
        sat = g[g["saturated"]]
        d = decay_analysis(sat if len(sat) else g, 1.0, confidence, CANONICAL_C, "canonical", n_boot, seed)
        star_rows.append({"rate": float(rk), "rate_x": float(rk) / REFERENCE_RATE, "n_runs": len(g),
                          "n_saturated": len(sat), "lambda_star": d.weight_decay_star, "how": d.explanation,
                          "seed_ci_low": d.seed_ci[0], "seed_ci_high": d.seed_ci[1], "boot_ci_low": d.bootstrap_ci[0],
                          "boot_ci_high": d.bootstrap_ci[1],
                          "law_lambda_star": law.decay_for(float(rk)) if law else math.nan,
                          **_law_interval(law, float(rk), confidence), "model_lambda_star": REFERENCE_WEIGHT_DECAY})
        # EOC-training's claim: the best final test loss at the decay whose plateau is the edge. Final losses
        # compare only between runs trained as long, so one row per (rate, run length).
        plateaus = g.groupby("weight_decay")["j2_plateau"].mean()
        star = d.weight_decay_star
        for epochs, same_length in g.groupby("last_epoch"):
            by_wd = {wd: gg["final_test_loss"].to_numpy(float) for wd, gg in same_length.groupby("weight_decay")}
            means = {wd: float(np.nanmean(v)) for wd, v in by_wd.items()}
            best = min(means, key=means.get)
            # the decay of this length nearest λ* (in log); none when this rate's plateaus do not bracket the edge
            grid = np.array(sorted(by_wd), dtype=float)
            edge_wd = float(grid[np.argmin(np.abs(np.log(grid / star)))]) if math.isfinite(star) else math.nan
            has_edge = math.isfinite(edge_wd)
            welch = (stats.ttest_ind(by_wd[best], by_wd[edge_wd], equal_var=False).pvalue
                     if has_edge and best != edge_wd and min(len(by_wd[best]), len(by_wd[edge_wd])) >= 2 else math.nan)
            mb, lb, hb = t_interval(by_wd[best], confidence)
            me, le, he = t_interval(by_wd[edge_wd], confidence) if has_edge else (math.nan,) * 3
            claim_rows.append({"rate": float(rk), "rate_x": float(rk) / REFERENCE_RATE, "epochs": float(epochs),
                               "best_decay": float(best), "best_loss": mb, "best_loss_low": lb, "best_loss_high": hb,
                               "edge_decay": edge_wd,
                               "edge_plateau": float(plateaus[edge_wd]) if has_edge else math.nan,
                               "edge_loss": me, "edge_loss_low": le, "edge_loss_high": he, "welch_p": float(welch),
                               "losses": "; ".join(f"{wd:g}: {means[wd]:.4f}" for wd in sorted(means))})
    return PlateauCalibration(law, dec, pd.DataFrame(star_rows), pd.DataFrame(claim_rows), r2, notes)


# -------------------------------------------------------------------------------------- calibration


def _chaotic_slope(curve: "RunCurve") -> float:
    """The J² slope per epoch over a run's checkpoints past the edge (χ >= 1), NaN with fewer than 3."""
    past = ~curve.ordered & np.isfinite(curve.j2)
    if past.sum() < 3:
        return math.nan
    return float(np.polyfit(curve.epochs[past], curve.j2[past], 1)[0])


@dataclass
class Calibration:
    """What :func:`calibrate` measured: the growth and plateau laws with their runs and checks."""

    source: str
    growth: GrowthCalibration
    plateau: PlateauCalibration
    sweep: "SweepAnalysis"
    confidence: float
    notes: list[str] = field(default_factory=list)

    @property
    def eoc_claim(self) -> "pd.DataFrame":
        return self.plateau.eoc_claim

    def laws(self, provenance: Optional[Mapping[str, Any]] = None) -> CalibratedLaws:
        """The measured laws as a :class:`CalibratedLaws` (the growth law must have been fitted; the plateau
        law is None when the decay runs gave none)."""
        if self.growth.law is None:
            raise ValueError(f"no growth law was fitted on {self.source} "
                             f"({'; '.join(self.growth.notes) or 'too few runs'}).")
        runs = self.sweep.runs
        ok = runs[~runs["status"].isin(EXCLUDED_STATUSES)]
        w = self.growth.law.j2_window
        window = f" calibration.j2_window=[{w[0]:g},{w[1]:g}]" if w else " calibration.j2_window=null"
        prov = {"dataset": sorted(set(ok["dataset"].astype(str))), "n_train": self.growth.law.n_train,
                "network": "fmnist_fc 784-784(tanh)-10, SGD", "date": datetime.now(timezone.utc).date().isoformat(),
                "source": self.source, "growth_runs": int(len(self.growth.runs)),
                "decay_runs": int(len(self.plateau.runs)), "seeds": sorted({str(s) for s in ok["seed"]}),
                "table": "runs.json",  # written beside laws.json: every run's settings, trace hash and series
                "command": "python -m stabilityscope task=calibrate runs=" + (
                    f"[{self.source.replace(', ', ',')}]" if ", " in self.source else self.source) + window,
                "rebuild": "python -m stabilityscope task=calibrate runs=<this folder>/runs.json" + window}
        prov.update(provenance or {})
        return CalibratedLaws(self.growth.law, self.plateau.law, prov)

    def summary(self) -> list[str]:
        lines = [f"{len(self.sweep.runs)} runs from {self.source}"]
        g = self.growth
        if g.law:
            lines.append("growth law: " + g.law.describe())
            for form, f in g.fits.items():
                lines.append(f"  {form}: AIC {f.aic:.1f}, RMS log residual {f.rms_log:.3f}, {f.n_runs} runs")
        lines += [f"growth: {n}" for n in g.notes]
        p = self.plateau
        if p.law:
            lines.append(f"plateau law: {p.law.describe()} (R² {p.r2:.3f}); q CI "
                         f"{p.law.q_ci[0]:.3f}–{p.law.q_ci[1]:.3f}, "
                         f"s CI {p.law.s_ci[0]:.3f}–{p.law.s_ci[1]:.3f}")
        for r in p.lambda_star.itertuples() if len(p.lambda_star) else []:
            lines.append(f"λ* at {r.rate_x:.3g}× the reference rate: {r.lambda_star:.4g} (seed CI {r.seed_ci_low:.3g}–"
                         f"{r.seed_ci_high:.3g}); law {r.law_lambda_star:.4g}; model c/2 {r.model_lambda_star:.4g}")
        for r in p.eoc_claim.itertuples() if len(p.eoc_claim) else []:
            lines.append(f"best final test loss at {r.rate_x:.3g}× after {r.epochs:g} epochs: decay {r.best_decay:g} "
                         f"({r.best_loss:.4f}); the grid decay nearest λ* {r.edge_decay:g} (plateau "
                         f"{r.edge_plateau:.3g}): {r.edge_loss:.4f}; Welch p = {r.welch_p:.3g}")
        return lines + self.notes + p.notes

    def to_dict(self) -> dict[str, Any]:
        g, p = self.growth, self.plateau
        return jsonable({
            "source": self.source, "confidence": self.confidence,
            "growth": {"law": asdict(g.law) if g.law else None, "fits": {k: asdict(v) for k, v in g.fits.items()},
                       "fits_all_runs": {k: asdict(v) for k, v in g.fits_all.items()},
                       "series_exponents": g.series_exponents, "runs": _records(g.runs), "notes": g.notes},
            "plateau": {"law": asdict(p.law) if p.law else None, "r2": p.r2, "runs": _records(p.runs),
                        "lambda_star": _records(p.lambda_star), "eoc_claim": _records(p.eoc_claim), "notes": p.notes},
            "notes": self.notes,
        })


def _records(df: "pd.DataFrame") -> list[dict[str, Any]]:
    return df.to_dict("records") if len(df) else []


def calibrate(source: Source, *, layer: str = "hidden", tolerance: float = 0.15, plateau_fraction: float = 0.2,
              confidence: float = 0.95, n_boot: int = 1000, seed: int = 0,
              j2_window: Optional[Sequence[float]] = DEFAULT_J2_WINDOW) -> Calibration:
    """Measure the growth and plateau laws on the runs of ``source`` (module docstring).

    Args:
        source: the runs: sweep directories, run directories, globs, runs tables
            (:mod:`stabilityscope.analysis.runs_table`), or a list of them (the two calibration presets'
            sweeps together, typically; or the table a ``laws.json`` was fitted on).
        layer: the layer whose J² is fitted.
        tolerance: relative agreement between a run's A and the growth law inside the validity range.
        plateau_fraction: a decay run's plateau is its mean J² over this last fraction of its epochs.
        confidence: level of every interval.
        n_boot: bootstrap samples over seeds for each rate's λ*.
        seed: of the bootstrap.
        j2_window: (low, high): every run's A is fitted over its ordered checkpoints with J² in this
            common range, and only with at least 3 of them (module docstring); None: over each run's whole
            ordered part (the packaged laws before this option).

    Raises:
        TraceError: ``source`` matches no trace.
        ValueError: a setting out of range.
    """
    from stabilityscope.analysis.scaling import analyze_sweep

    if not (0 < tolerance < 1):
        raise ValueError(f"tolerance={tolerance!r}: the relative agreement that defines the validity range lies in "
                         f"(0, 1), e.g. 0.15.")
    window = None if j2_window is None else (float(j2_window[0]), float(j2_window[1]))
    # the ordered-part slope over the common J² window, at any epoch (the calibration runs are short where the
    # rate is high, and cover little of the path where it is low)
    sweep = analyze_sweep(source, layer=layer, window=math.inf, ordered_only=True, plateau_fraction=plateau_fraction,
                          confidence=confidence, n_boot=0, seed=seed, j2_window=window)
    runs = sweep.runs
    growth_runs = runs[runs["used_in_fits"] & (runs["weight_decay"] == 0)].copy()
    short = runs[(runs["weight_decay"] == 0) & ~runs["status"].isin(EXCLUDED_STATUSES)
                 & ~np.isfinite(runs["A"].astype(float))]
    window_notes = [f"{len(short)} zero-decay run(s) without 3 ordered checkpoints in the J² window "
                    f"{window[0]:g}–{window[1]:g} have no A (left out of the growth law): "
                    + ", ".join(f"{r.run} ({r.rate / REFERENCE_RATE:.3g}×)" for r in short.itertuples())] \
        if window is not None and len(short) else []
    growth_runs["A_chaotic"] = [(_chaotic_slope(sweep.curves[r]) if r in sweep.curves else math.nan)
                                for r in growth_runs["run"]]
    growth = fit_growth_law(growth_runs, tolerance=tolerance, confidence=confidence, j2_window=window)
    growth.notes += window_notes
    plateau = _plateau_calibration(runs, sweep.curves, confidence, n_boot, seed,
                                   growth.law.validity if growth.law is not None else None)
    if growth.law is not None and len(plateau.runs):
        # the guideline's assumption, dJ²/dt = A·(1 − J²/J²∞): relaxation time J²∞/A (a prediction, beside τ measured)
        n = plateau.runs["n_train"].astype(float).to_numpy()
        plateau.runs["tau_guideline"] = (plateau.runs["j2_plateau"].astype(float).to_numpy()
                                         / growth.law.slope(plateau.runs["rate"].astype(float).to_numpy(), n))
    notes = [n for n in sweep.notes if "still running" in n or "left out" in n]
    return Calibration(str(sweep.source), growth, plateau, sweep, confidence, notes)
