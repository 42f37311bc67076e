"""The figures' shared look: the palette, the rc style, legends, axes, and writing a figure to disk.

Every figure of :mod:`stabilityscope.plots` is a matplotlib :class:`~matplotlib.figure.Figure` built
without pyplot (no global state, any backend; Jupyter shows it inline), drawn under :data:`STYLE`
(:func:`styled`) and written by :func:`save_figure`.
"""
from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any, Callable, Sequence, Union

import matplotlib
import numpy as np
from matplotlib import patheffects
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import LogFormatter, MaxNLocator

__all__ = ["BACKGROUND_CMAP", "COLORS", "EDGE_COLOR", "HALO", "LOSS_COLOR", "MAX_LEGEND_LAYERS", "SEPARATION_FLOOR",
           "STYLE", "PlainLogFormatter", "epoch_axis", "layer_colors", "log_y", "mark_optimum", "optimum_handle",
           "save_figure", "styled", "thin_legend"]

# Okabe–Ito colour-blind-safe palette (blue, vermillion, bluish green, reddish purple, orange, sky blue,
# yellow, black). Yellow is last but one: it is hard to see on white.
COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
LOSS_COLOR = "#7F7F7F"  # test loss on twin axes: neutral, so it never competes with a statistic
EDGE_COLOR = "#000000"
# The heatmap: white (ordered, separation → 0) to mid grey (chaotic), so coloured paths stay readable.
BACKGROUND_CMAP = LinearSegmentedColormap.from_list("ss_background", ["#FFFFFF", "#8C8C8C"])
SEPARATION_FLOOR = 1e-6  # lower end of the log colour scale; ordered cells reach exactly 0
STYLE = {"font.size": 10, "axes.titlesize": 10.5, "axes.labelsize": 10, "legend.fontsize": 8.5,
         "xtick.labelsize": 9, "ytick.labelsize": 9, "figure.titlesize": 12, "axes.spines.top": False,
         "axes.spines.right": False, "savefig.dpi": 150, "savefig.bbox": "tight", "pdf.fonttype": 42}
HALO = [patheffects.withStroke(linewidth=3.5, foreground="white")]  # keeps lines legible on the heatmap


def styled(fn: Callable[..., Figure]) -> Callable[..., Figure]:
    """Draw under the package's rc style (font sizes, no top/right spines), leaving global rc alone."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Figure:
        with matplotlib.rc_context(STYLE):
            return fn(*args, **kwargs)

    return wrapper


MAX_LEGEND_LAYERS = 10  # beyond this many layers a legend names only the first and the last


def layer_colors(n: int) -> list[Any]:
    """Okabe–Ito for up to 7 layers; beyond that viridis (colour-blind-safe) from first to last layer."""
    if n <= 7:
        return list(COLORS[:7])
    return [matplotlib.colormaps["viridis"](v) for v in np.linspace(0.0, 0.9, n)]


def thin_legend(handles: list[Any], labels: list[str], n_layers: int) -> list[Any]:
    """Layer entries of a legend, condensed to the first and the last when there are many layers."""
    if n_layers <= MAX_LEGEND_LAYERS:
        return handles
    first, last = handles[0], handles[n_layers - 1]
    note = Line2D([], [], color="none", label=f"… {n_layers} layers, colour from the first to the last")
    return [first, note, last, *handles[n_layers:]]


class PlainLogFormatter(LogFormatter):
    """Log-axis labels as plain numbers (0.6, 2, 30), not 6×10⁻¹; which ticks get one is LogFormatter's rule."""

    def _num_to_string(self, x: float, vmin: float, vmax: float) -> str:
        return f"{x:.3g}"


def log_y(ax: Any) -> None:
    """A log y axis labelled with plain numbers."""
    ax.set_yscale("log")
    for setter in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
        setter(PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def epoch_axis(ax: Any, x: str = "epoch") -> None:
    """Label the checkpoint axis: whole epochs, or optimiser steps on a log axis (0 kept: linear below 1)."""
    if x == "step":
        ax.set_xscale("symlog", linthresh=1, linscale=0.3)
        ax.set_xlim(left=0)  # symlog would show an empty negative decade
        ax.set_xlabel("optimiser step (log scale above 1)")
        return
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 2.5


def mark_optimum(ax: Any, epoch: float) -> None:
    """A dotted vertical line at the optimal checkpoint."""
    ax.axvline(epoch, color="0.35", ls=":", lw=1.2, zorder=1)


def optimum_handle(epoch: float, x: str = "epoch") -> Line2D:
    """The legend entry of :func:`mark_optimum`'s line."""
    where = f"step {int(epoch)}" if x == "step" else f"epoch {epoch:g}"
    return Line2D([], [], color="0.35", ls=":", lw=1.2, label=f"optimal checkpoint (min test loss), {where}")


def save_figure(fig: Figure, out_dir: Union[str, Path], stem: str,
                formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """Write ``fig`` as ``<out_dir>/<stem>.<format>`` for every format; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.{fmt}" for fmt in formats]
    # fontTools, subsetting the embedded (Type 42) fonts of a PDF, warns about DejaVu's old timestamps
    font_log = logging.getLogger("fontTools")
    level = font_log.level
    font_log.setLevel(logging.ERROR)
    try:
        with matplotlib.rc_context(STYLE):
            for p in paths:
                fig.savefig(p)
    finally:
        font_log.setLevel(level)
    return paths

