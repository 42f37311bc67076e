"""Figures of the calibration (:mod:`stabilityscope.analysis.calibration`): the growth law and the plateau law.

=========================  ======================================================================
``plot_growth_law``        the slope A against η/((1−α)B) with every candidate form and the law's
                           validity range; each run's A over the law's prediction
``plot_plateau_law``       the J² plateau against weight decay per rate with the fitted law and the
                           edge; final test loss against decay per rate
=========================  ======================================================================
"""
from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from stabilityscope.analysis.calibration import REFERENCE_RATE, Calibration
from stabilityscope.errors import TraceError
from stabilityscope.plots.style import COLORS, EDGE_COLOR, log_y, styled

__all__ = ["SERIES_LABELS", "plot_growth_law", "plot_plateau_law"]

SERIES_LABELS = {"lr": "η varied", "momentum": "α varied", "batch_size": "B varied", "reference": "reference run",
                 "mixed": "other"}


@styled
def plot_growth_law(c: Calibration) -> Figure:
    """A against the rate with the candidate forms and the validity range; the ratio to the law."""
    g = c.growth
    if g.runs.empty or not g.fits_all:
        raise TraceError("The growth-law figure needs zero-decay runs at two or more rates with a slope A each.")
    fig = Figure(figsize=(10.5, 4.4), layout="constrained")
    ax, ax2 = fig.subplots(1, 2)
    runs = g.runs
    x = runs["rate"].to_numpy(float) / REFERENCE_RATE
    series = runs["series"] if "series" in runs else ["mixed"] * len(runs)
    for i, name in enumerate(SERIES_LABELS):
        m = np.asarray(series) == name
        if m.any():
            ax.plot(x[m], runs["A_at_n"].to_numpy(float)[m], "o", color=COLORS[i % len(COLORS)], ms=5, mec="white",
                    mew=0.5, label=SERIES_LABELS[name], zorder=3)
            if "A_chaotic" in runs:
                ax.plot(x[m], runs["A_chaotic"].to_numpy(float)[m], "o", mfc="none", color=COLORS[i % len(COLORS)],
                        ms=5, zorder=3)
            if "ratio_to_law" in runs:
                ax2.plot(x[m], runs["ratio_to_law"].to_numpy(float)[m], "o", color=COLORS[i % len(COLORS)], ms=5)
    xs = np.geomspace(x.min(), x.max(), 60)
    chosen = g.law.form if g.law else None
    fits = g.fits if g.fits else g.fits_all
    for form, f in fits.items():
        law = f.law(REFERENCE_RATE, int(runs["n_train"].max()), (math.nan, math.nan), 0.0)
        ax.plot(xs, law.slope(xs * REFERENCE_RATE), "-" if form == chosen else "--", color=EDGE_COLOR if form == chosen
                else "0.55", lw=1.4 if form == chosen else 0.9, label=f"{form} (AIC {f.aic:.1f})")
    if g.law:
        lo, hi = (v / REFERENCE_RATE for v in g.law.validity)
        for a in (ax, ax2):
            a.axvspan(lo, hi, color="0.9", zorder=0)
        ax2.axhspan(1 - g.law.tolerance, 1 + g.law.tolerance, color="#cde", zorder=0)
    ax2.axhline(1, color=EDGE_COLOR, lw=0.8)
    for a in (ax, ax2):
        a.set_xscale("log")
        a.set_xlabel("η/((1−α)B) / 1.25e-3")
    log_y(ax)
    ax.set_ylabel("slope A of J² per epoch (open: past the edge)")
    ax2.set_ylabel("A measured / A of the law")
    ax.legend(frameon=False, fontsize=7.5)
    ax.set_title("A against the rate" + (f": {g.law.form} law" if g.law else ": no law within tolerance"))
    ax2.set_title("agreement with the law")
    return fig


@styled
def plot_plateau_law(c: Calibration) -> Figure:
    """J²∞ against decay per rate with the fitted law; final test loss against decay per rate."""
    p = c.plateau
    if p.runs.empty:
        raise TraceError("The plateau-law figure needs runs with weight decay > 0.")
    fig = Figure(figsize=(10.5, 4.4), layout="constrained")
    ax, ax2 = fig.subplots(1, 2)
    from scipy import stats

    for i, (rk, g) in enumerate(p.runs.groupby("rate_key")):
        color = COLORS[i % len(COLORS)]
        label = f"{rk / REFERENCE_RATE:.3g}× the reference rate"
        sat = g[g["saturated"]]
        if len(sat):
            m = sat.groupby("weight_decay")["j2_plateau"].agg(["mean", "std"])
            ax.errorbar(m.index, m["mean"], yerr=m["std"].fillna(0), fmt="o", color=color, ms=5, capsize=2, label=label)
        uns = g[~g["saturated"]]
        if len(uns):  # labelled too: a rate with no saturated run must still be named in the legend
            ax.plot(uns["weight_decay"], uns["j2_plateau"], "x", color=color, ms=5,
                    label=f"{label}, not saturated (J² at the end)")
        if p.law:
            wd = np.geomspace(g["weight_decay"].min(), g["weight_decay"].max(), 30)
            ax.plot(wd, p.law.plateau(wd, rk), "-", color=color, lw=1)
        loss = g.groupby("weight_decay")["final_test_loss"]
        mean, sd, n = loss.mean(), loss.std(), loss.count()
        half = np.array([float(stats.t.ppf(0.975, k - 1)) if k > 1 else np.nan for k in n]) * sd / np.sqrt(n)
        ax2.errorbar(mean.index, mean, yerr=np.nan_to_num(half.to_numpy(float)), fmt="o-", color=color, ms=4, capsize=2,
                     label=label)
    ax.axhline(1.0, color=EDGE_COLOR, lw=0.8, ls=":")
    for a in (ax, ax2):
        a.set_xscale("log")
        a.set_xlabel("optim.weight_decay")
    log_y(ax)
    ax.set_ylabel("J² plateau (last fifth of the run)")
    ax2.set_ylabel("final test loss")
    ax2.set_yscale("log")
    ax.legend(frameon=False, fontsize=7.5)
    ax.set_title("plateau law" + (f" (R² {p.r2:.3f})" if p.law else ": not fitted"))
    ax2.set_title("final test loss against decay")
    return fig
