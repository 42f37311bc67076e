"""Spline-FC's comparison figure: test loss against epoch and wall time, random vs MARS initialisation.

=========================  ======================================================================
``plot_init_comparison``   per setting: test loss against epoch and against wall time, random vs
                           MARS init (median over seeds, min–max band)
=========================  ======================================================================
"""
from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from typing import Any, Iterator, Optional, Sequence

import numpy as np
from matplotlib.figure import Figure

from stabilityscope.analysis.init_comparison import comparison_groups, init_curves
from stabilityscope.plots.style import COLORS, EDGE_COLOR, epoch_axis, log_y, styled

__all__ = ["INIT_COLORS", "plot_init_comparison"]

INIT_COLORS = {"random": COLORS[0], "mars": COLORS[1]}


def _stacked(curves: Sequence[Any], field: str) -> np.ndarray:
    """(runs, checkpoints) of one field, NaN after a run's end (a diverged run stops early)."""
    n = max(len(getattr(c, field)) for c in curves)
    out = np.full((len(curves), n), np.nan)
    for i, c in enumerate(curves):
        v = getattr(c, field)
        out[i, : len(v)] = v
    return out


@styled
def plot_init_comparison(source: Any, *, loss_ceiling: Optional[float] = None) -> Figure:
    """Spline-FC's comparison: test loss against epoch and against wall time, random vs MARS init, per setting.

    One row per group of runs that differ only in ``model.init`` and the seed (e.g. width × optimiser);
    the line is the median over seeds, the band their minimum to maximum. Wall time includes the MARS
    fit (a MARS run's checkpoint 0 sits at the fit's seconds); its x is the mean over seeds at each
    checkpoint. A regression's dotted line is the MARS model's own test MSE.

    Args:
        source: the runs: a sweep directory, a glob, traces, or curves of
            :func:`~stabilityscope.analysis.init_comparison.init_curves`.
        loss_ceiling: the top of the loss axes (default: 4 × the lowest final median loss of any group and
            init, raised to keep every spline-initialised start in view, so that a random start far above
            the targets does not flatten the comparison; the title says when curves are cut; ``math.inf``:
            everything).
    """
    curves = init_curves(source)
    groups = comparison_groups(curves)
    regression = curves[0].regression
    finals = [float(np.nanmedian([c.test_loss[-1] for c in g if c.init == init]))
              for g in groups.values() for init in {c.init for c in g}]
    starts = [float(c.test_loss[0]) for c in curves if c.init != "random" and np.isfinite(c.test_loss[0])]
    ceiling = loss_ceiling if loss_ceiling is not None else max(
        [4 * min(f for f in finals if np.isfinite(f))] + [1.1 * v for v in starts])
    highest = max(float(np.nanmax(c.test_loss)) for c in curves)
    fig = Figure(figsize=(11, 3.6 * len(groups) + 0.8), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(groups), 2, squeeze=False))
    for row, (key, group) in zip(axes, groups.items()):
        short = [k if k.split(".")[-1] in ("name", "kind", "enabled") else k.split(".")[-1] for k, _ in key]
        title = ", ".join(f"{n} = {v}" for n, (_, v) in zip(short, key)) or "all runs"
        values = np.concatenate([c.test_loss[np.isfinite(c.test_loss)] for c in group])
        for init in sorted({c.init for c in group}, key=lambda s: (s != "random", s)):
            runs = [c for c in group if c.init == init]
            loss, epoch, wall = (_stacked(runs, f) for f in ("test_loss", "epoch", "wall_time"))
            with np.errstate(all="ignore"), _nan_warnings_off():
                mid, lo, hi = np.nanmedian(loss, 0), np.nanmin(loss, 0), np.nanmax(loss, 0)
                x_epoch, x_wall = np.nanmean(epoch, 0), np.nanmean(wall, 0)
            color = INIT_COLORS.get(init, COLORS[2])
            label = f"{init} init ({len(runs)} seed{'s' if len(runs) > 1 else ''})"
            for ax, x in ((row[0], x_epoch), (row[1], x_wall)):
                ax.fill_between(x, lo, hi, color=color, alpha=0.22, lw=0)
                ax.plot(x, mid, "-", color=color, lw=1.7, label=label)
        mars = [c.mars_target() for c in group if c.init == "mars" and math.isfinite(c.mars_target())]
        for ax in row:
            if regression and mars:
                ax.axhline(float(np.median(mars)), color=EDGE_COLOR, ls=":", lw=1.1,
                           label=f"MARS model's own test MSE {np.median(mars):.4g}")
            top = min(ceiling, float(values.max()) * 1.05) if len(values) else ceiling
            if len(values) and top / max(values.min(), 1e-300) > 3:
                log_y(ax)
            if len(values):
                ax.set_ylim(values.min() * 0.97, top)
            ax.set_ylabel("test MSE" if regression else "test loss (cross-entropy, nats)")
        epoch_axis(row[0])
        row[1].set_xlabel("wall time (s, MARS fit included)")
        row[0].set_title(f"{title}: test loss against epoch")
        row[1].set_title(f"{title}: against wall time")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 3), frameon=False)
    cut = f"; losses above {ceiling:.3g} cut off (the highest is {highest:.3g})" if highest > ceiling else ""
    fig.suptitle(f"Spline-FC: random vs MARS initialisation (line: median over seeds, band: min–max{cut})")
    return fig


@contextmanager
def _nan_warnings_off() -> Iterator[None]:
    """Silence numpy's all-NaN-slice warnings (a column where every run has ended)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield
