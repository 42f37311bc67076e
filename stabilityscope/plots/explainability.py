"""Figures of SGD-complexity: how much of the network a linear classifier explains, over training.

==========================  =====================================================================
``plot_explainability``     I(F_t;Y) and μ_Y(F_t;L) with bootstrap bands, the level I(L;Y), and the
                            explained share μ/I(F_t;Y) with the end of the linear phase
``plot_complexity_matrix``  μ_Y(F_t;F_s) for every pair of checkpoints (increasing complexity)
==========================  =====================================================================
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from stabilityscope.analysis.explainability import complexity_matrix, considered, explainability_table, linear_phase_end
from stabilityscope.analysis.readout import TraceLike, checkpoint_axis, opened, require_checkpoints
from stabilityscope.plots.style import COLORS, EDGE_COLOR, epoch_axis, styled

__all__ = ["plot_complexity_matrix", "plot_explainability"]


@styled
def plot_explainability(trace: TraceLike, x: Optional[str] = None, threshold: float = 0.9) -> Figure:
    """SGD-complexity over training: I(F_t;Y) and μ_Y(F_t;L) with their bootstrap bands, the level I(L;Y)
    (left), and the explained share μ/I(F_t;Y) with the end of the linear phase (right).

    Args:
        trace: an open trace or its path, recorded with ``analysis.explainability=true``.
        x: ``step`` (log axis, the default for step schedules) or ``epoch``.
        threshold: the share that counts as "explained by L" (Nakkiran et al. use 0.9 informally).
    """
    with opened(trace) as tr:
        require_checkpoints(tr)
        table = explainability_table(tr)
        end = linear_phase_end(tr, threshold)
        xs, x = checkpoint_axis(tr, x)
        steps = tr.steps
    fig = Figure(figsize=(11, 4.6), layout="constrained")
    a1, a2 = fig.subplots(1, 2)
    ms = 3 if len(xs) <= 60 else 0
    for key, color, label in (("info_F_Y", COLORS[0], r"$I(F_t;Y)$: the network's information about the labels"),
                              ("mu_F_L", COLORS[1], r"$\mu_Y(F_t;L)$: the part the linear model $L$ explains")):
        a1.plot(xs, table[key], "o-", ms=ms, color=color, lw=1.6, label=label)
        lo, hi = table[f"{key}_low"], table[f"{key}_high"]
        if np.isfinite(lo).any():
            a1.fill_between(xs, lo, hi, color=color, alpha=0.2, lw=0)
    a1.plot(xs, table["info_F_Y_given_L"], "--", color=COLORS[2], lw=1.2,
            label=r"$I(F_t;Y\,|\,L)$: what $F_t$ knows beyond $L$")
    a1.axhline(table["info_L_Y"], color=EDGE_COLOR, lw=1, label=f"$I(L;Y)$ = {table['info_L_Y']:.3f} bits (L: test "
                                                                f"accuracy {100 * table['baseline_test_acc']:.1f}%)")
    a1.set_ylabel("bits")
    a1.set_title("Information about the labels, and the part a linear model explains")
    with np.errstate(invalid="ignore", divide="ignore"):
        share = table["mu_F_L"] / table["info_F_Y"]
    shown = considered(table)  # trained checkpoints with >= 10% of L's information: the rest is noise
    a2.plot(xs[shown], share[shown], "o-", ms=ms, color=COLORS[3], lw=1.6)
    a2.axhline(threshold, color=EDGE_COLOR, lw=1, ls="--")
    ended = end is not None and shown.any() and end < int(steps[shown][-1])  # else: never fell below, or never reached
    if ended:
        a2.axvline(xs[list(steps).index(end)], color="0.35", ls=":", lw=1.2)
    a2.set_ylim(min(0.0, float(np.nanmin(share[shown])) if shown.any() else 0.0) - 0.02, 1.05)
    a2.set_ylabel(r"$\mu_Y(F_t;L)\,/\,I(F_t;Y)$")
    phase = (f"up to step {end}" if ended else f"through the end (step {end})" if end is not None
             else "at no checkpoint")
    a2.set_title(f"Share explained by L: ≥ {threshold:g} {phase}")
    for ax in (a1, a2):
        epoch_axis(ax, x)
    handles = a1.get_legend_handles_labels()[0] + [
        Patch(color="0.5", alpha=0.3, lw=0, label="bootstrap interval"),
        Line2D([], [], color=EDGE_COLOR, ls="--", lw=1, label=f"share {threshold:g}"),
        Line2D([], [], color="0.35", ls=":", lw=1.2, label="end of the linear phase")]
    warn = "" if table["baseline_converged"] else "  [baseline L did not converge: approximate]"
    fig.legend(handles=handles, loc="outside lower center", ncols=3, frameon=False)
    fig.suptitle("How much of the network a linear classifier explains (SGD-complexity)" + warn)
    return fig


@styled
def plot_complexity_matrix(trace: TraceLike, relative: bool = True) -> Figure:
    """Heat map of μ_Y(F_t; F_s) for every pair of checkpoints (SGD-complexity's increasing complexity).

    Row t, column s: how much of F_t's information about the labels F_s explains; with ``relative``
    divided by I(F_t; Y) (1 = F_s explains all of F_t), rows of the initialisation and of checkpoints
    with less than a tenth of the best I(F;Y) left blank (grey). Below the diagonal s < t: earlier
    checkpoints.
    """
    with opened(trace) as tr:
        require_checkpoints(tr, 2)
        m = complexity_matrix(tr)
        step_axis = tr.step_schedule
    values = m.mu
    if relative:  # rows of untrained or uninformed checkpoints (< 10% of the best I(F;Y)) divide noise by ~0: blank
        keep = np.isfinite(m.info) & (m.steps > 0) & (m.info >= 0.1 * np.nanmax(m.info))
        values = np.where(keep[:, None], m.mu / np.where(keep, m.info, 1.0)[:, None], np.nan)
    finite = values[np.isfinite(values)]
    fig = Figure(figsize=(6.6, 5.6), layout="constrained")
    ax = fig.subplots()
    vmax = 1.0 if relative else (float(finite.max()) if finite.size else 1.0)
    vmin = min(0.0, float(finite.min())) if finite.size else 0.0
    im = ax.imshow(values, origin="lower", cmap="viridis", vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_facecolor("0.85")  # blank rows: checkpoints with too little information to divide by
    n = len(m.steps)
    ticks = np.unique(np.linspace(0, n - 1, min(n, 8)).round().astype(int))
    names = [str(int(m.steps[i])) if step_axis else f"{m.epoch_fraction[i]:g}" for i in ticks]
    ax.set_xticks(ticks, names, rotation=45)
    ax.set_yticks(ticks, names)
    unit = "step" if step_axis else "epoch"
    ax.set_xlabel(f"conditioning checkpoint $F_s$ ({unit})")
    ax.set_ylabel(f"checkpoint $F_t$ ({unit})")
    label = r"$\mu_Y(F_t;F_s)\,/\,I(F_t;Y)$" if relative else r"$\mu_Y(F_t;F_s)$ (bits)"
    fig.colorbar(im, ax=ax, label=label)
    ax.set_title("How much of each checkpoint the others explain")
    return fig
