"""Figures of a sweep analysis (:mod:`stabilityscope.analysis.scaling`): EOC-training's scaling laws and weight decay.

Each ``plot_*`` function takes a :class:`~stabilityscope.analysis.scaling.SweepAnalysis` and returns a matplotlib
Figure (no pyplot, any backend, shown inline in Jupyter); it raises
:class:`~stabilityscope.errors.TraceError` saying what is missing when the sweep has no data for it.
:func:`scaling_figures` draws every figure the sweep supports and lists the others with the reason.

=========================  ======================================================================
``plot_scaling_fits``      the slope A against η, 1/(1−α), 1/B (and n) on log–log axes, each group
                           of runs that holds the other variables fixed with its power-law fit, and
                           A against ρ = η·n/((1−α)B) with the combined form A = c·ρ
``plot_collapse``          J² and test loss against τ = epoch·η/((1−α)B): collapse in the ordered
                           phase, none in the chaotic phase (shaded)
``plot_j2_curves``         J² against epoch for every run, the fitted linear growth dashed
``plot_decay_plateau``     the J² plateau against weight decay (mean ± std over seeds, seeds as
                           dots), the model's c/(2·wd), the edge, λ* with its interval
``plot_decay_metrics``     final and best test loss and accuracy against weight decay, λ* marked
=========================  ======================================================================
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import matplotlib
import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from stabilityscope.analysis.scaling import VARIABLE_LABELS, VARIABLES, SweepAnalysis
from stabilityscope.errors import TraceError
from stabilityscope.plots.style import COLORS, EDGE_COLOR, PlainLogFormatter, log_y, save_figure, styled

__all__ = ["FIGURES", "plot_collapse", "plot_decay_metrics", "plot_decay_plateau", "plot_j2_curves",
           "plot_scaling_fits", "scaling_figures"]

FIGURES = ("scaling_fits", "collapse", "j2_curves", "decay_plateau", "decay_metrics")
CHAOTIC_SHADE = "#EDEDED"  # the chaotic side of the edge: light grey, so coloured runs stay readable
STAR_COLOR = COLORS[1]  # λ*: vermillion
MODEL_COLOR = COLORS[2]  # the model's prediction: bluish green
X_LABELS = {"lr": "learning rate η", "momentum": "1/(1−α)  (α = momentum)", "batch_size": "1/B  (B = batch size)",
            "n_train": "training examples n"}


def _palette(n: int) -> list[Any]:
    """Okabe–Ito for up to 7 series, viridis beyond."""
    if n <= 7:
        return list(COLORS[:7])
    return [matplotlib.colormaps["viridis"](v) for v in np.linspace(0.0, 0.9, n)]


def _log_x(ax: Any) -> None:
    """A log x axis labelled with plain numbers (0.02, not 2×10⁻²), as figures' log y axes."""
    ax.set_xscale("log")
    _plain_ticks(ax.xaxis)


def _plain_ticks(axis: Any) -> None:
    for setter in (axis.set_major_formatter, axis.set_minor_formatter):
        setter(PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def _short(fixed: dict[str, Any]) -> str:
    names = {"lr": "η", "momentum": "α", "batch_size": "B", "n_train": "n", "weight_decay": "wd"}
    return ", ".join(f"{names.get(k, k)} = "
                     f"{v:g}" for k, v in fixed.items() if v is not None and not (k == "weight_decay" and v == 0))


# ----------------------------------------------------------------------------------------- scaling


@styled
def plot_scaling_fits(analysis: SweepAnalysis) -> Figure:
    """A against each scaling variable the sweep varies (log–log), with the power-law fit of every
    group of runs that holds the other variables fixed (EOC-training: A ∝ η/((1−α)B), exponents 1),
    and A against ρ = η·n/((1−α)B) with the combined form A = c·ρ."""
    a = analysis
    variables = [v for v in VARIABLES if any(f.variable == v for f in a.power_laws)]
    fitted = a.fitted
    combined = a.combined is not None and fitted["rho"].nunique() > 1
    if not variables and not combined:
        raise TraceError("The scaling-fit figure needs runs that differ in η, α, B or n (with a slope A each); "
                         "this sweep has none to fit.")
    n = len(variables) + int(combined)
    fig = Figure(figsize=(4.3 * n + 0.4, 4.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, n))
    for ax, var in zip(axes, variables):
        fits = [f for f in a.power_laws if f.variable == var]
        for color, f in zip(_palette(len(fits)), fits):
            x, A = np.asarray(f.x), np.asarray(f.A)
            ax.plot(x, A, "o", color=color, ms=5, mec="white", mew=0.5, zorder=3)
            xs = np.geomspace(x.min(), x.max(), 20)
            ci = "" if not math.isfinite(f.exponent_ci[0]) else f" [{f.exponent_ci[0]:.2f}, {f.exponent_ci[1]:.2f}]"
            label = f"p = {f.exponent:.3f}{ci}" + (f"  ({_short(f.fixed)})" if len(fits) <= 6 else "")
            ax.plot(xs, f.prefactor * xs ** f.exponent, "-", color=color, lw=1.3, label=label)
        _log_x(ax)
        log_y(ax)
        ax.set_xlabel(X_LABELS[var])
        ax.set_ylabel("slope A of J² (per epoch)")
        joint = a.joint.exponents.get(var) if a.joint else None
        title = f"A ∝ ({VARIABLE_LABELS[var]})$^p$" + (f"; joint fit p = {joint:.3f}" if joint is not None else "")
        ax.set_title(title)
        ax.legend(loc="best", frameon=False, fontsize=7.5,
                  title=None if len(fits) <= 6 else f"{len(fits)} groups holding the rest fixed")
    if combined:
        ax = axes[-1]
        cf = a.combined
        rho, A = fitted["rho"].to_numpy(dtype=float), fitted["A"].to_numpy(dtype=float)
        ax.plot(rho, A, "o", color=COLORS[0], ms=5, mec="white", mew=0.5, zorder=3, label=f"{len(rho)} runs")
        xs = np.geomspace(rho.min(), rho.max(), 20)
        r2 = f", R² = {cf.r2:.3f}" if math.isfinite(cf.r2) else ""
        ax.plot(xs, cf.c * xs, "-", color=EDGE_COLOR, lw=1.2,
                label=f"A = c·ρ, c = {cf.c:.4g} [{cf.c_ci[0]:.4g}, {cf.c_ci[1]:.4g}]{r2}")
        _log_x(ax)
        log_y(ax)
        ax.set_xlabel(r"$\rho = \eta\, n/((1-\alpha)B)$")
        ax.set_ylabel("slope A of J² (per epoch)")
        C = f"C = {cf.C:.4g} per epoch" if cf.n_train is not None else "n differs between runs"
        ax.set_title(f"Combined form A = C·η/((1−α)B); {C}")
        ax.legend(loc="best", frameon=False, fontsize=7.5)
    fig.suptitle(f"Scaling of the linear growth of J² (layer {a.settings.layer!r}, ordered part of the first "
                 f"{a.settings.window:g} epochs; {a.combined.confidence:.0%} intervals)" if a.combined else
                 f"Scaling of the linear growth of J² (layer {a.settings.layer!r})")
    return fig


def _rate_colors(rates: Sequence[float]) -> tuple[Callable[[float], Any], Optional[Any]]:
    """A colour per η/((1−α)B): Okabe–Ito for a few distinct values, a log colour map otherwise."""
    distinct = sorted(set(float(f"{r:.10g}") for r in rates))
    if len(distinct) <= 7:
        table = dict(zip(distinct, COLORS[:7]))
        return (lambda r: table[float(f"{r:.10g}")]), None
    norm = LogNorm(min(distinct), max(distinct))
    cmap = matplotlib.colormaps["viridis"]
    return (lambda r: cmap(0.9 * norm(r))), matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap)


@styled
def plot_collapse(analysis: SweepAnalysis) -> Figure:
    """J² and test loss against the rescaled time τ = epoch·η/((1−α)B) (EOC-training): runs collapse
    onto one curve in the ordered phase (J² below the edge) and fan out in the chaotic phase (shaded).
    The relative spread across runs is in the titles."""
    col = analysis.collapse.sweep
    if col is None:
        raise TraceError("The collapse figure needs at least two runs with the same weight decay and training-set "
                         "size; this sweep has none.")
    curves = [analysis.curves[r] for r in col.runs]
    color_of, mappable = _rate_colors([c.rate for c in curves])
    edge = curves[0].edge
    fig = Figure(figsize=(11.5, 4.8), layout="constrained")
    a1, a2 = fig.subplots(1, 2)
    seen: dict[float, Line2D] = {}
    for c in curves:
        key = float(f"{c.rate:.10g}")
        (line,) = a1.plot(c.tau, c.j2, "-", color=color_of(c.rate), lw=1.4, alpha=0.9)
        a2.plot(c.tau, c.test_loss, "-", color=color_of(c.rate), lw=1.4, alpha=0.9)
        seen.setdefault(key, line)
    # the view: up to 3× the edge (the collapse and where it breaks), over the τ that two runs or more reach
    top = max(min(float(np.nanmax(col.j2)) * 1.08, 3 * edge), edge * 1.3)
    ends = sorted(float(c.tau[-1]) for c in curves)
    right = ends[-2] if len(ends) >= 2 and ends[-2] > 0 else ends[-1]
    a1.axhspan(edge, top, color=CHAOTIC_SHADE, zorder=0)
    a1.axhline(edge, color=EDGE_COLOR, lw=1.1)
    a1.set_ylim(0, top)
    chaotic_tau = col.tau[~col.ordered]
    if len(chaotic_tau):  # the loss panel: shade where the runs' mean is past the edge
        a2.axvspan(float(chaotic_tau.min()), float(col.tau.max()), color=CHAOTIC_SHADE, zorder=0)
    log_y(a2)
    for ax in (a1, a2):
        ax.set_xlabel(r"rescaled time $\tau = \mathrm{epoch}\cdot\eta/((1-\alpha)B)$")
        ax.set_xlim(0, right)
    a1.set_ylabel(r"$J^2$ of layer " + repr(analysis.settings.layer))
    a2.set_ylabel("test loss (log scale)")
    a1.set_title(f"J² against τ; relative spread {col.spread_ordered:.3g} ordered, {col.spread_chaotic:.3g} chaotic")
    a2.set_title(f"Test loss against τ; spread {col.loss_spread_ordered:.3g} ordered, {col.loss_spread_chaotic:.3g} "
                 "chaotic")
    handles: list[Any] = []
    if mappable is None:
        handles += [Line2D([], [], color=h.get_color(), lw=2, label="η/((1−α)B) = "
                                                                    f"{k:.4g}") for k, h in sorted(seen.items())]
    else:
        fig.colorbar(mappable, ax=a2, label=r"$\eta/((1-\alpha)B)$")
    handles += [Line2D([], [], color=EDGE_COLOR, lw=1.1, label=f"edge of chaos J² = {edge:g}"),
                Patch(color=CHAOTIC_SHADE, label="chaotic phase")]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 5), frameon=False)
    wd = f", weight decay {col.weight_decay:g}" if col.weight_decay else ""
    fig.suptitle(f"Collapse against rescaled time: {len(curves)} runs{wd}")
    return fig


@styled
def plot_j2_curves(analysis: SweepAnalysis) -> Figure:
    """J² against epoch for every run (coloured by weight decay when the sweep varies it, else by
    η/((1−α)B)), the fitted linear growth A·epoch + J²(0) dashed over its fit window, the edge."""
    a = analysis
    if not a.curves:
        raise TraceError(f"No run of this sweep records the coupling J of layer {a.settings.layer!r}.")
    runs = a.runs.set_index("run")
    curves = list(a.curves.values())
    by_decay = len({c.weight_decay for c in curves}) > 1
    if by_decay:
        decays = sorted({c.weight_decay for c in curves})
        table = dict(zip(decays, _palette(len(decays))))
        color_of = lambda c: table[c.weight_decay]  # noqa: E731
        keys = [(f"weight decay {d:g} (Keras λ {d / 2:g})", table[d]) for d in decays]
    else:
        rate_color, mappable = _rate_colors([c.rate for c in curves])
        color_of = lambda c: rate_color(c.rate)  # noqa: E731
        rates = sorted({float(f"{c.rate:.10g}") for c in curves})
        keys = [(f"η/((1−α)B) = {r:.4g}", rate_color(r)) for r in rates] if len(rates) <= 7 else []
    fig = Figure(figsize=(8.5, 5.2), layout="constrained")
    ax = fig.subplots()
    thin = len(curves) > 20
    for c in curves:
        ax.plot(c.epochs, c.j2, "-", color=color_of(c), lw=0.9 if thin else 1.4, alpha=0.7 if thin else 0.95)
        row = runs.loc[c.run]
        if bool(row.get("used_in_fits", False)) and math.isfinite(row["A"]):
            e = np.array([0.0, min(a.settings.window, float(c.epochs[-1]))])
            ax.plot(e, row["A_intercept"] + row["A"] * e, "--", color=color_of(c), lw=1.0, alpha=0.9)
    edge = curves[0].edge
    ax.axhline(edge, color=EDGE_COLOR, lw=1.1)
    j2max = max(float(np.nanmax(c.j2)) for c in curves)
    if j2max > 30 * edge:
        log_y(ax)
    else:
        ax.set_ylim(0, max(j2max * 1.05, edge * 1.2))
    ax.set_xlabel("epoch")
    ax.set_ylabel(r"$J^2$ of layer " + repr(a.settings.layer))
    ax.set_title(f"J² against epoch, {len(curves)} runs; dashed: linear growth fitted over the ordered part of the "
                 f"first {a.settings.window:g} epochs")
    handles = [Line2D([], [], color=col, lw=2, label=lab) for lab, col in keys]
    handles += [Line2D([], [], color="0.3", ls="--", lw=1, label="fit A·epoch + J²(0)"),
                Line2D([], [], color=EDGE_COLOR, lw=1.1, label=f"edge of chaos J² = {edge:g}")]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, frameon=False)
    return fig


# ------------------------------------------------------------------------------------- weight decay


def _decay_positions(decays: np.ndarray) -> tuple[np.ndarray, Optional[float]]:
    """x positions on a log axis: zero decay drawn at a stand-in a factor 4 left of the smallest non-zero one."""
    d = np.asarray(decays, dtype=float)
    nonzero = d[d > 0]
    if not len(nonzero):
        raise TraceError("The weight-decay figures need at least one run with weight decay > 0.")
    zero_at = float(nonzero.min()) / 4 if (d == 0).any() else None
    return np.where(d == 0, zero_at if zero_at else np.nan, d), zero_at


def _errorbars(ax: Any, x: np.ndarray, mean: Any, std: Any, zero_at: Optional[float], **style: Any) -> None:
    """Mean ± std against decay: the non-zero decays joined by a line, the zero-decay stand-in apart."""
    mean, std = np.asarray(mean, dtype=float), np.nan_to_num(np.asarray(std, dtype=float))
    label = style.pop("label", None)
    at_zero = x == zero_at if zero_at is not None else np.zeros(len(x), dtype=bool)
    ax.errorbar(x[~at_zero], mean[~at_zero], yerr=std[~at_zero], fmt="o-", capsize=3, lw=1.4, label=label, **style)
    if at_zero.any():
        ax.errorbar(x[at_zero], mean[at_zero], yerr=std[at_zero], fmt="o", capsize=3, **style)


def _decay_axis(ax: Any, zero_at: Optional[float]) -> None:
    _log_x(ax)
    ax.set_xlabel("weight decay (PyTorch optim.weight_decay; Keras λ = half)")
    if zero_at is not None:  # name the stand-in and break the axis after it (log axes have no 0)
        ax.axvline(zero_at * 2, color="0.75", lw=0.8, ls=(0, (2, 2)))
        ax.annotate("no\ndecay", xy=(zero_at, 0), xycoords=("data", "axes fraction"), xytext=(0, 3),
                    textcoords="offset points", ha="center", va="bottom", fontsize=8, color="0.35")
    top = ax.secondary_xaxis("top", functions=(lambda x: x / 2, lambda x: x * 2))
    _plain_ticks(top.xaxis)
    top.set_xlabel("Keras L2 λ")


def _mark_star(ax: Any, analysis: SweepAnalysis) -> list[Any]:
    """Draw λ* (with its bootstrap interval, else the per-seed one) and the model's c/2; returns legend handles."""
    d = analysis.decay
    handles: list[Any] = []
    if math.isfinite(d.weight_decay_star):
        lo, hi = d.bootstrap_ci
        if not (math.isfinite(lo) and math.isfinite(hi)):
            lo, hi = d.seed_ci
        if math.isfinite(lo) and math.isfinite(hi) and hi > lo:
            ax.axvspan(lo, hi, color=STAR_COLOR, alpha=0.15, lw=0)
        ax.axvline(d.weight_decay_star, color=STAR_COLOR, lw=1.6)
        handles.append(Line2D([], [], color=STAR_COLOR, lw=1.6,
                              label=f"λ* = {d.weight_decay_star:.3g} (Keras {d.keras_l2_star:.3g}), interval shaded"))
    if math.isfinite(d.model_weight_decay_star):
        ax.axvline(d.model_weight_decay_star, color=MODEL_COLOR, lw=1.3, ls=":")
        handles.append(Line2D([], [], color=MODEL_COLOR, lw=1.3, ls=":",
                              label=f"model λ* = c/2 = {d.model_weight_decay_star:.3g}"))
    return handles


def _decay_table(analysis: SweepAnalysis) -> Any:
    t = analysis.decay.table
    if t is None or len(t) < 2:
        raise TraceError(f"The weight-decay figures need runs at two or more weight-decay values: "
                         f"{analysis.decay.explanation}.")
    return t


@styled
def plot_decay_plateau(analysis: SweepAnalysis) -> Figure:
    """The J² plateau against weight decay: mean ± std over runs per decay, each run a dot, the
    model's plateau c/(2·wd) (stabilityscope.analysis.scaling), the edge J² = 1 and λ* where the mean crosses it."""
    a = analysis
    t = _decay_table(a)
    x, zero_at = _decay_positions(t["weight_decay"].to_numpy())
    fig = Figure(figsize=(8.2, 5.4), layout="constrained")
    ax = fig.subplots()
    runs = a.runs[~a.runs["status"].isin(("failed", "diverged", "unreadable"))
                  & np.isfinite(a.runs["j2_plateau"].astype(float))]
    rx, _ = _decay_positions(runs["weight_decay"].to_numpy()) if zero_at else (runs["weight_decay"].to_numpy(), None)
    ax.plot(rx, runs["j2_plateau"], ".", color="0.55", ms=5, zorder=2)
    _errorbars(ax, x, t["j2_plateau_mean"], t["j2_plateau_std"], zero_at, color=COLORS[0], ms=6, zorder=3)
    d = a.decay
    nonzero = t["weight_decay"][t["weight_decay"] > 0].to_numpy(dtype=float)
    xs = np.geomspace(nonzero.min() / 1.5, nonzero.max() * 1.5, 50)
    ax.plot(xs, d.model_plateau(xs), "--", color=MODEL_COLOR, lw=1.3, zorder=1)
    ax.axhline(d.edge, color=EDGE_COLOR, lw=1.1)
    handles = [Line2D([], [], color=COLORS[0], marker="o", lw=1.4, label="plateau, mean ± std over runs"),
               Line2D([], [], color="0.55", marker=".", ls="", label="one run"),
               Line2D([], [], color=MODEL_COLOR, ls="--", lw=1.3, label=f"model J²∞ = c/(2·wd), c = {d.model_c:.3g}"),
               Line2D([], [], color=EDGE_COLOR, lw=1.1, label=f"edge of chaos J² = {d.edge:g}")]
    handles += _mark_star(ax, a)
    _decay_axis(ax, zero_at)
    log_y(ax)
    ax.set_ylabel(f"J² plateau (mean over the last {a.settings.plateau_fraction:.0%} of the epochs)")
    zero_note = "; at 0: the final J² (no plateau)" if zero_at else ""
    ax.set_title(f"Weight decay sets the J² plateau{zero_note}")
    fig.legend(handles=handles, loc="outside lower center", ncols=2, frameon=False)
    return fig


@styled
def plot_decay_metrics(analysis: SweepAnalysis) -> Figure:
    """Final and best (minimum) test loss and final and best test accuracy against weight decay
    (mean ± std over runs), λ* and the model's c/2 marked (EOC-training: the best final test loss is
    expected near λ*)."""
    a = analysis
    t = _decay_table(a)
    x, zero_at = _decay_positions(t["weight_decay"].to_numpy())
    fig = Figure(figsize=(11.5, 4.9), layout="constrained")
    a1, a2 = fig.subplots(1, 2)
    star: list[Any] = []
    for ax, pairs, scale in ((a1, (("final_test_loss", "final"), ("test_loss_min", "best (minimum)")), 1.0),
                             (a2, (("final_test_acc", "final"), ("best_test_acc", "best")), 100.0)):
        for color, (col, lab) in zip((COLORS[0], COLORS[4]), pairs):
            _errorbars(ax, x, t[f"{col}_mean"] * scale, t[f"{col}_std"] * scale, zero_at, color=color, ms=5, label=lab)
        _decay_axis(ax, zero_at)
        star = _mark_star(ax, a)
    a1.set_ylabel("test loss (cross-entropy, nats)")
    a2.set_ylabel("test accuracy (%)")
    a1.set_title("Test loss against weight decay")
    a2.set_title("Test accuracy against weight decay")
    fig.legend(handles=a1.get_legend_handles_labels()[0] + star, loc="outside lower center", ncols=4, frameon=False)
    return fig


# ---------------------------------------------------------------------------------------- all of them


def scaling_figures(analysis: SweepAnalysis, out_dir: Union[str, Path], *,
                    formats: Sequence[str] = ("png", "pdf")) -> tuple[dict[str, Path], dict[str, str]]:
    """Every figure the sweep supports into ``out_dir`` (PNG, and PDF unless ``formats`` leaves it out).

    Returns:
        (written, skipped): the PNG of each figure drawn, by name; for the others, the reason.
    """
    makers: dict[str, Callable[[SweepAnalysis], Figure]] = {
        "scaling_fits": plot_scaling_fits, "collapse": plot_collapse, "j2_curves": plot_j2_curves,
        "decay_plateau": plot_decay_plateau, "decay_metrics": plot_decay_metrics}
    written: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    for name in FIGURES:
        try:
            fig = makers[name](analysis)
        except TraceError as exc:
            skipped[name] = str(exc)
            continue
        written[name] = save_figure(fig, out_dir, name, ("png", *(f for f in formats if f != "png")))[0]
    return written, skipped
