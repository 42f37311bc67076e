"""Figures drawn from run traces: EOC-training's training path and EOC-optimality's map measures.

Every ``plot_*`` function reads a :class:`~stabilityscope.recording.trace.Trace` (or a path to one) and returns
a matplotlib :class:`~matplotlib.figure.Figure` built without pyplot (no global state, any backend;
Jupyter shows it inline). :func:`save_figure` writes one as PNG and PDF; :func:`training_figures`
draws every figure a trace supports into a folder.

=========================  ======================================================================
``plot_phase_path``        the path (J0/J, 1/J) over checkpoints on the numerical phase diagram of
                           the run's activation, theoretical edge overlaid; arrows for direction,
                           markers for start, end and the optimal checkpoint (EOC-training)
``plot_coupling``          J² and J0 against epoch, the fitted linear growth of J², the edge J² = J_c²
``plot_metrics``           train/test loss and accuracy against epoch, the optimal epoch marked
``plot_layer_stability``   per square layer: s (M1), λ_max and the asymptotic distance (M4) against
                           epoch, test loss on a twin axis, the edge drawn (EOC-optimality)
``plot_poincare``          Poincaré return maps (M5) at chosen checkpoints, one panel each
``plot_eigenvalues``       a square layer's eigenvalues in the complex plane with the unit circle
``plot_comparison``        several runs (e.g. weight-decay values): paths, J², test loss
``plot_init_comparison``   Spline-FC: test loss against epoch and wall time, random vs MARS init
=========================  ======================================================================

Decision-region geometry (FC-geometry) has its own module, :mod:`stabilityscope.analysis.geometry_figures`
(``plot_decision_regions``, and ``plot_geometry``, defined here and re-exported there); :func:`draw_figures`
includes ``geometry`` when a trace records it (``analysis.geometry=true``).

The numerical phase diagram behind the path (:func:`phase_background`, SCIENCE.md §1.4) is computed
once per (activation, grid, N, T, seed) and cached on disk under ``$STABILITYSCOPE_CACHE`` (default
``$XDG_CACHE_HOME/stabilityscope`` or ``~/.cache/stabilityscope``). Its default (N = 500, T = 200,
41 × 25 cells) is a *picture*: finite N and T smear the transition, so the heatmap's boundary lies
near, not on, the mean-field edge; the colour bar states N and T.

A function that needs statistics the trace lacks raises :class:`~stabilityscope.errors.TraceError`
naming them and the option that records them (``analysis=economy`` records no iterated maps and no
eigenvalues; only square layers have them).
"""
from __future__ import annotations

import functools
import logging
import math
import os
import textwrap
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import matplotlib
import numpy as np
from matplotlib import patheffects
from matplotlib.colors import LinearSegmentedColormap, LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import LogFormatter, MaxNLocator

from stabilityscope.analysis.explainability import (complexity_matrix, considered, explainability_table,
                                                    linear_phase_end)
from stabilityscope.dynamics.geometry import GEOMETRY_STATS, band_kind
from stabilityscope.errors import TraceError
from stabilityscope.recording.trace import Trace, config_section, open_trace
from stabilityscope.theory import numerical_phase_diagram as npd
from stabilityscope.theory.meanfield import critical_coupling, edge_curve, phase_plane

__all__ = [
    "COLORS", "BackgroundSpec", "linear_growth_fit", "optimal_index", "phase_background", "plot_comparison",
    "plot_coupling", "plot_eigenvalues", "plot_layer_stability", "plot_metrics", "plot_phase_path",
    "plot_poincare", "save_figure", "training_figures", "draw_figures", "geometry_layers", "plot_geometry",
    "plot_explainability", "plot_complexity_matrix", "checkpoint_axis", "plot_init_comparison",
]

# Okabe–Ito colour-blind-safe palette (blue, vermillion, bluish green, reddish purple, orange, sky blue,
# yellow, black). Yellow is last but one: it is hard to see on white.
COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
LOSS_COLOR = "#7F7F7F"  # test loss on twin axes: neutral, so it never competes with a statistic
EDGE_COLOR = "#000000"
# The heatmap: white (ordered, separation → 0) to mid grey (chaotic), so coloured paths stay readable.
BACKGROUND_CMAP = LinearSegmentedColormap.from_list("ss_background", ["#FFFFFF", "#8C8C8C"])
SEPARATION_FLOOR = 1e-6  # lower end of the log colour scale; ordered cells reach exactly 0
_STYLE = {"font.size": 10, "axes.titlesize": 10.5, "axes.labelsize": 10, "legend.fontsize": 8.5,
          "xtick.labelsize": 9, "ytick.labelsize": 9, "figure.titlesize": 12, "axes.spines.top": False,
          "axes.spines.right": False, "savefig.dpi": 150, "savefig.bbox": "tight", "pdf.fonttype": 42}
_HALO = [patheffects.withStroke(linewidth=3.5, foreground="white")]  # keeps lines legible on the heatmap
TraceLike = Union[Trace, str, Path]


def _styled(fn: Callable[..., Figure]) -> Callable[..., Figure]:
    """Draw under the package's rc style (font sizes, no top/right spines), leaving global rc alone."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Figure:
        with matplotlib.rc_context(_STYLE):
            return fn(*args, **kwargs)

    return wrapper


@contextmanager
def _opened(trace: TraceLike) -> Iterator[Trace]:
    """An open Trace: the one given, or one opened (and closed again) from a path."""
    if isinstance(trace, Trace):
        yield trace
    else:
        with open_trace(trace) as tr:
            yield tr


# ---------------------------------------------------------------------------------------- helpers


def linear_growth_fit(epochs: np.ndarray, j2: np.ndarray, max_epoch: int = 50, edge: float = 1.0) -> tuple[float, float]:
    """Slope A and intercept of J² against epoch over the ordered part (J² < edge) of the first epochs.

    EOC-training: J² grows linearly in epochs in the ordered phase. Returns NaNs with fewer than 2 points
    at distinct epochs (a run that crosses the edge inside its first epoch has ordered checkpoints only there).
    """
    epochs, j2 = np.asarray(epochs, dtype=float), np.asarray(j2, dtype=float)
    keep = (epochs <= max_epoch) & (j2 < edge) & np.isfinite(j2)
    if keep.sum() < 2 or np.ptp(epochs[keep]) == 0:
        return float("nan"), float("nan")
    slope, intercept = np.polyfit(epochs[keep], j2[keep], 1)
    return float(slope), float(intercept)


def optimal_index(trace: Trace) -> int:
    """Checkpoint index of the minimum test loss (EOC-training's optimal epoch)."""
    loss = trace.metric("test_loss")
    if not len(loss) or not np.isfinite(loss).any():
        raise TraceError(f"{trace.path} has no finite test loss to locate the optimal checkpoint.")
    return int(np.nanargmin(np.where(np.isfinite(loss), loss, np.nan)))


def _require_checkpoints(tr: Trace, n: int = 1) -> None:
    if len(tr) < n:
        raise TraceError(f"{tr.path} holds {len(tr)} checkpoint(s); this figure needs at least {n}.")


def run_activation(tr: Trace) -> str:
    """The activation whose phase diagram a run lives on: the most common among its layers (tanh/relu)."""
    acts = [str(tr.layer_info(layer).get("activation", "")) for layer in tr.layers]
    acts = [a for a in acts if a in ("tanh", "relu")]
    if acts:
        return max(set(acts), key=acts.count)
    act = str(config_section(tr.config, "model").get("activation", "tanh"))
    return act if act in ("tanh", "relu") else "tanh"


def _analysis_name(tr: Trace) -> str:
    return str(config_section(tr.config, "analysis").get("name", "?"))


MAP_KINDS = ("chain", "model_map")  # records iterated as a module: no single weight matrix, no (J0, J)


def _is_map(tr: Trace, layer: str) -> bool:
    return str(tr.layer_info(layer).get("kind", "")) in MAP_KINDS


def _has_matrix(tr: Trace, layer: str) -> bool:
    """A record with phase coordinates (every FC layer; not chains or model maps)."""
    stats = tr.stats(layer)
    return "J" in stats and "J0" in stats


def _require_matrix(tr: Trace, layer: str, what: str) -> None:
    if not _has_matrix(tr, layer):
        raise TraceError(f"{what} needs phase coordinates (J, J0), and {layer!r} of {tr.path} is a "
                         f"{tr.layer_info(layer).get('kind', 'record')} iterated as a whole module: it has no single "
                         f"weight matrix. Layers with coordinates: "
                         f"{', '.join(n for n in tr.layers if _has_matrix(tr, n)) or 'none'}.")


def _require_stats(tr: Trace, layer: str, names: Sequence[str], what: str, option: str) -> None:
    """TraceError naming the missing statistics of ``layer`` and how to record them."""
    info = tr.layer_info(layer)
    if _is_map(tr, layer) and "eigenvalues" in names:
        _require_matrix(tr, layer, what)
    if not info.get("square") and not _is_map(tr, layer):
        square = [name for name in tr.layers if tr.layer_info(name).get("square")]
        raise TraceError(
            f"{what} needs a square layer, and layer {layer!r} of {tr.path} is {info.get('fan_in')} → "
            f"{info.get('fan_out')}: a single non-square layer has no iterated map or eigenvalues. "
            + (f"Square layers of this trace: {', '.join(square)}." if square else "This trace has no square layer."))
    missing = [n for n in names if n not in tr.stats(layer)]
    if missing:
        raise TraceError(
            f"{what} needs the statistic(s) {', '.join(missing)} of layer {layer!r}, which {tr.path} does not "
            f"record (it was made with analysis={_analysis_name(tr)}). Record them with {option}.")


_MAPS_OPTION = "analysis=standard (or analysis.maps=true)"
_EIGEN_OPTION = "analysis=standard (or analysis.eigen=true)"


def _layers_with(tr: Trace, names: Sequence[str], what: str, option: str, layers: Optional[Sequence[str]]) -> list[str]:
    """The requested layers (each checked), or every square layer that records ``names``."""
    if layers is not None:
        for layer in layers:
            _require_stats(tr, layer, names, what, option)
        return list(layers)
    found = [layer for layer in tr.layers if (tr.layer_info(layer).get("square") or _is_map(tr, layer))
             and all(n in tr.stats(layer) for n in names)]
    if found:
        return found
    square = [layer for layer in tr.layers if tr.layer_info(layer).get("square")]
    if square:  # the informative message: what is missing and how to record it
        _require_stats(tr, square[0], names, what, option)
    shapes = ", ".join(f"{n} ({tr.layer_info(n).get('fan_in')} → {tr.layer_info(n).get('fan_out')})" for n in tr.layers)
    raise TraceError(f"{what} needs a square layer with {', '.join(names)}, and no layer of {tr.path} is square "
                     f"({shapes}): a single non-square layer has no iterated map or eigenvalues.")


def _checkpoint_indices(tr: Trace, epochs: Optional[Sequence[int]]) -> list[int]:
    """Indices of the requested epochs; default: the start, the optimal and the last checkpoint."""
    ck = tr.checkpoints
    if epochs is None:
        return sorted({0, optimal_index(tr), len(ck) - 1})
    out = []
    for e in epochs:
        hit = np.flatnonzero(ck == int(e))
        if not len(hit):
            shown = ", ".join(str(int(x)) for x in ck[:12]) + (", ..." if len(ck) > 12 else "")
            raise TraceError(f"{tr.path} has no checkpoint at epoch {e}; its checkpoints are epochs {shown}.")
        out.append(int(hit[0]))
    return out


def _snapshot_panels(tr: Trace, stat: str, what: str, option: str, layer: Optional[str],
                     epochs: Optional[Sequence[int]]) -> tuple[str, list[int], np.ndarray, int]:
    """What a one-panel-per-checkpoint figure of a square layer's ``stat`` needs: the layer (checked,
    default the first with ``stat``), the panels' checkpoint indices, all checkpoint epochs and the
    optimal checkpoint's index."""
    _require_checkpoints(tr)
    chosen = _layers_with(tr, [stat], what, option, None if layer is None else [layer])[0]
    return chosen, _checkpoint_indices(tr, epochs), tr.checkpoints, optimal_index(tr)


def _grid(n_panels: int, max_cols: int = 4) -> tuple[int, int]:
    cols = min(n_panels, max_cols)
    return math.ceil(n_panels / cols), cols


MAX_LEGEND_LAYERS = 10  # beyond this many layers a legend names only the first and the last
MAX_STABILITY_ROWS = 6  # plot_layer_stability draws this many records unless told which


def layer_colors(n: int) -> list[Any]:
    """Okabe–Ito for up to 7 layers; beyond that viridis (colour-blind-safe) from first to last layer."""
    if n <= 7:
        return list(COLORS[:7])
    return [matplotlib.colormaps["viridis"](v) for v in np.linspace(0.0, 0.9, n)]


def _thin_legend(handles: list[Any], labels: list[str], n_layers: int) -> list[Any]:
    """Layer entries of a legend, condensed to the first and the last when there are many layers."""
    if n_layers <= MAX_LEGEND_LAYERS:
        return handles
    first, last = handles[0], handles[n_layers - 1]
    note = Line2D([], [], color="none", label=f"… {n_layers} layers, colour from the first to the last")
    return [first, note, last, *handles[n_layers:]]


def _layer_label(tr: Trace, layer: str) -> str:
    return layer if tr.layer_info(layer).get("square") else f"{layer} (mean-field surrogate)"


class _PlainLogFormatter(LogFormatter):
    """Log-axis labels as plain numbers (0.6, 2, 30), not 6×10⁻¹; which ticks get one is LogFormatter's rule."""

    def _num_to_string(self, x: float, vmin: float, vmax: float) -> str:
        return f"{x:.3g}"


def _log_y(ax: Any) -> None:
    """A log y axis labelled with plain numbers."""
    ax.set_yscale("log")
    for setter in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
        setter(_PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def _epoch_axis(ax: Any, x: str = "epoch") -> None:
    """Label the checkpoint axis: whole epochs, or optimiser steps on a log axis (0 kept: linear below 1)."""
    if x == "step":
        ax.set_xscale("symlog", linthresh=1, linscale=0.3)
        ax.set_xlim(left=0)  # symlog would show an empty negative decade
        ax.set_xlabel("optimiser step (log scale above 1)")
        return
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 2.5


def checkpoint_axis(tr: Trace, x: Optional[str] = None) -> tuple[np.ndarray, str]:
    """(x values of the checkpoints, axis): ``x`` = ``epoch`` (fractional epochs) or ``step``; None picks
    ``step`` for runs scheduled in steps (train.checkpoints.unit=step), else ``epoch``."""
    x = x or ("step" if tr.step_schedule else "epoch")
    return tr.position(x), x


def _mark_optimum(ax: Any, epoch: float) -> None:
    ax.axvline(epoch, color="0.35", ls=":", lw=1.2, zorder=1)


def _optimum_handle(epoch: float, x: str = "epoch") -> Line2D:
    where = f"step {int(epoch)}" if x == "step" else f"epoch {epoch:g}"
    return Line2D([], [], color="0.35", ls=":", lw=1.2, label=f"optimal checkpoint (min test loss), {where}")


def save_figure(fig: Figure, out_dir: Union[str, Path], stem: str, formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """Write ``fig`` as ``<out_dir>/<stem>.<format>`` for every format; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.{fmt}" for fmt in formats]
    # fontTools, subsetting the embedded (Type 42) fonts of a PDF, warns about DejaVu's old timestamps
    font_log = logging.getLogger("fontTools")
    level = font_log.level
    font_log.setLevel(logging.ERROR)
    try:
        with matplotlib.rc_context(_STYLE):
            for p in paths:
                fig.savefig(p)
    finally:
        font_log.setLevel(level)
    return paths


# ------------------------------------------------------------------------ the numerical background


@dataclass(frozen=True)
class BackgroundSpec:
    """The numerical phase diagram drawn behind training paths (SCIENCE.md §1.4).

    The default costs seconds on 2 CPU cores and is cached; it is a picture, not a measurement:
    at N = 500 and T = 200 the transition is visibly smeared (the original: N = 10,000, T = 500).
    """

    n: int = 500  # network width N
    steps: int = 200  # iterations T
    j0_over_j: tuple[float, float, int] = (-2.0, 2.0, 41)  # x grid: start, stop, number of cells
    inv_j: tuple[float, float, int] = (0.1, 2.5, 25)  # y grid: start, stop, number of cells (1/J > 0)
    seed: int = 0

    def key(self, activation: str) -> str:
        """The cache file name: every parameter that changes the result, readable."""
        x, y = self.j0_over_j, self.inv_j
        return (f"{activation}_N{self.n}_T{self.steps}_seed{self.seed}"
                f"_x{x[0]:g}_{x[1]:g}_{int(x[2])}_y{y[0]:g}_{y[1]:g}_{int(y[2])}.h5")


def cache_dir() -> Path:
    """Where cached phase diagrams live: ``$STABILITYSCOPE_CACHE/phase_diagrams`` or the user cache."""
    root = os.environ.get("STABILITYSCOPE_CACHE")
    if not root:
        root = str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "stabilityscope")
    return Path(root) / "phase_diagrams"


def phase_background(activation: str = "tanh", spec: BackgroundSpec = BackgroundSpec(),
                     cache: Optional[Union[str, Path]] = None) -> Any:
    """The numerical phase diagram of ``activation`` on ``spec``'s grid, from the disk cache if present.

    Args:
        activation: "tanh" or "relu".
        spec: grid, N, T and seed.
        cache: folder of cached diagrams; None takes :func:`cache_dir`. An unwritable folder only
            means the diagram is recomputed next time.

    Returns:
        A ``PhaseDiagram`` (``separation`` shaped (len(inv_j), len(j0_over_j)), N, T, seed kept).
    """
    folder = Path(cache) if cache is not None else cache_dir()
    path = folder / spec.key(activation)
    if path.exists():
        try:
            return npd.PhaseDiagram.load(path)
        except TraceError:
            pass  # a damaged cache file: compute it again
    diagram = npd.phase_diagram(np.linspace(*spec.j0_over_j[:2], int(spec.j0_over_j[2])),
                                np.linspace(*spec.inv_j[:2], int(spec.inv_j[2])),
                                spec.n, spec.steps, activation=activation, seed=spec.seed)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        diagram.save(tmp)
        os.replace(tmp, path)  # atomic: concurrent runs never read half a file
    except OSError:
        pass
    return diagram


def _draw_background(fig: Figure, ax: Any, diagram: Any) -> None:
    """Log-scale heatmap of the asymptotic separation, clipped to [floor, 1]; diverged cells at the top."""
    sep = np.asarray(diagram.separation, dtype=np.float64)
    sep = np.where(np.isfinite(sep), np.clip(sep, SEPARATION_FLOOR, 1.0), 1.0)  # ReLU overflow = chaotic
    mesh = ax.pcolormesh(npd.cell_edges(diagram.j0_over_j), npd.cell_edges(diagram.inv_j), sep, cmap=BACKGROUND_CMAP,
                         norm=LogNorm(SEPARATION_FLOOR, 1.0), shading="flat", zorder=0, rasterized=True)
    cb = fig.colorbar(mesh, ax=ax, shrink=0.85, pad=0.02)
    cb.set_label(r"asymptotic separation $\langle\|x_t - x'_t\|\rangle$ (clipped to 1)"
                 f"\nrandom networks, N = {diagram.n}, T = {diagram.steps}: finite N and T blur the transition")


def _draw_edge(ax: Any, activation: str, y_max: float, ls: str = "-") -> None:
    curve = edge_curve(np.linspace(0.01, y_max, 400), activation=activation)
    x, y = curve.polyline()
    ax.plot(x, y, color=EDGE_COLOR, lw=1.6, ls=ls, path_effects=_HALO, zorder=2,
            label=r"edge of chaos (mean-field $\chi = 1$)")


def _draw_path(ax: Any, x: np.ndarray, y: np.ndarray, color: str, best: int, label: str,
               span: tuple[float, float], max_arrows: int = 5) -> None:
    """Path with arrowheads spaced evenly along its length, start ○, end ■, optimum ★.

    ``span`` is the axes' (width, height) in data units: one arrow per ~12% of the axes the path
    covers (at most ``max_arrows``; none on a path too short to show a direction).
    """
    ok = np.isfinite(x) & np.isfinite(y)
    ax.plot(x[ok], y[ok], "-", color=color, lw=1.8, path_effects=_HALO, zorder=3, label=label)
    xs, ys = x[ok], y[ok]
    if len(xs) > 1:
        seg = np.hypot(np.diff(xs) / span[0], np.diff(ys) / span[1])  # in axes fractions
        total = seg.sum()
        n_arrows = min(max_arrows, max(int(total > 0.04), int(total / 0.12)))
        if n_arrows:
            cum = np.concatenate([[0.0], np.cumsum(seg)])
            for s in (np.arange(n_arrows) + 0.5) / n_arrows * total:
                i = int(np.clip(np.searchsorted(cum, s) - 1, 0, len(seg) - 1))
                while seg[i] == 0 and i < len(seg) - 1:
                    i += 1
                f = (s - cum[i]) / seg[i] if seg[i] > 0 else 1.0
                px, py = xs[i] + f * (xs[i + 1] - xs[i]), ys[i] + f * (ys[i + 1] - ys[i])
                dx, dy = (xs[i + 1] - xs[i]) * 1e-3, (ys[i + 1] - ys[i]) * 1e-3
                ax.annotate("", xy=(px + dx, py + dy), xytext=(px, py), zorder=4,
                            arrowprops=dict(arrowstyle="-|>,head_length=0.8,head_width=0.45", color=color,
                                            lw=0, shrinkA=0, shrinkB=0, mutation_scale=12))
    if ok[0]:
        ax.plot(x[0], y[0], "o", color=color, mfc="white", mew=1.8, ms=8, zorder=5)
    if ok[-1]:
        ax.plot(x[-1], y[-1], "s", color=color, mec="white", ms=7, zorder=5)
    if ok[best]:
        ax.plot(x[best], y[best], "*", color=color, mec="black", mew=0.8, ms=15, zorder=6)


def _phase_layers(tr: Trace, layers: Optional[Sequence[str]], activation: str) -> list[str]:
    if layers is not None:
        for layer in layers:
            _require_matrix(tr, layer, "The phase path")  # also TraceError for an unknown layer
        return list(layers)
    coupled = [n for n in tr.layers if _has_matrix(tr, n)]
    if not coupled:
        raise TraceError(f"{tr.path} records no layer with phase coordinates (J, J0); nothing to place on the "
                         f"phase diagram.")
    same = [n for n in coupled if tr.layer_info(n).get("meanfield_activation", activation) == activation]
    return same or coupled


@_styled
def plot_phase_path(trace: TraceLike, layers: Optional[Sequence[str]] = None, *,
                    background: Union[bool, BackgroundSpec, Any] = True,
                    cache: Optional[Union[str, Path]] = None) -> Figure:
    """The training path (J0/J, 1/J) of each layer over checkpoints on the phase diagram (EOC-training).

    Args:
        trace: an open trace or its path.
        layers: layers to draw; default: every layer whose mean-field activation is the run's (a
            ReLU run's classifier head has a tanh surrogate and would not belong on the ReLU diagram).
            Non-square layers are labelled as their mean-field surrogate.
        background: True: the cached numerical diagram of the run's activation with the default
            :class:`BackgroundSpec`; a BackgroundSpec; a ``PhaseDiagram`` to draw as it is; False:
            the theoretical edge only.
        cache: folder of cached backgrounds (None: :func:`cache_dir`).
    """
    with _opened(trace) as tr:
        _require_checkpoints(tr)
        activation = run_activation(tr)
        layers = _phase_layers(tr, layers, activation)
        epochs, best = tr.checkpoints, optimal_index(tr)
        coords = {}
        for layer in layers:
            x, y = phase_plane(tr.stat(layer, "J0"), tr.stat(layer, "J"))
            coords[layer] = (np.atleast_1d(x), np.atleast_1d(y))
        labels = {layer: _layer_label(tr, layer) for layer in layers}
    fig = Figure(figsize=(7.4, 6.4), layout="constrained")
    ax = fig.add_subplot()
    diagram = None
    if background is True or isinstance(background, BackgroundSpec):
        spec = background if isinstance(background, BackgroundSpec) else BackgroundSpec()
        diagram = phase_background(activation, spec, cache)
    elif background is not False and background is not None:
        diagram = background
    if diagram is not None and diagram.activation != activation:
        raise ValueError(f"the background is a {diagram.activation} diagram but the run uses {activation}")
    # limits: the grid (or a default window), widened to hold every finite path point
    pts_x = np.concatenate([c[0][np.isfinite(c[0])] for c in coords.values()] + [np.zeros(0)])
    pts_y = np.concatenate([c[1][np.isfinite(c[1])] for c in coords.values()] + [np.zeros(0)])
    if diagram is not None:
        x_lim = list(npd.cell_edges(diagram.j0_over_j)[[0, -1]])
        y_lim = [0.0, float(npd.cell_edges(diagram.inv_j)[-1])]
        _draw_background(fig, ax, diagram)
    else:
        x_lim, y_lim = [-2.0, 2.0], [0.0, 2.5]
    if len(pts_x):
        pad_x, pad_y = 0.05 * (x_lim[1] - x_lim[0]), 0.05 * y_lim[1]
        x_lim = [min(x_lim[0], pts_x.min() - pad_x), max(x_lim[1], pts_x.max() + pad_x)]
        y_lim = [0.0, max(y_lim[1], pts_y.max() + pad_y)]
    _draw_edge(ax, activation, y_lim[1])
    span = (x_lim[1] - x_lim[0], y_lim[1] - y_lim[0])
    for color, layer in zip(layer_colors(len(layers)), layers):
        _draw_path(ax, *coords[layer], color, best, labels[layer], span, max_arrows=5 if len(layers) <= 7 else 1)
    ax.set_xlim(*x_lim)
    ax.set_ylim(*y_lim)
    ax.set_xlabel(r"$J_0/J$  (mean coupling / coupling spread)")
    ax.set_ylabel(r"$1/J$  (inverse coupling spread)")
    box = dict(boxstyle="round,pad=0.25", fc="white", ec="none", alpha=0.85)
    ax.text(0.02, 0.98, "ordered", transform=ax.transAxes, va="top", ha="left", fontsize=10, bbox=box, zorder=7)
    ax.text(0.72, 0.02, "chaotic", transform=ax.transAxes, va="bottom", ha="left", fontsize=10, bbox=box, zorder=7)
    ax.set_title(f"Training path on the phase diagram ({activation}); {len(epochs)} checkpoints, "
                 f"epochs {int(epochs[0])}–{int(epochs[-1])}")
    handles, names = ax.get_legend_handles_labels()
    handles = [handles[0]] + _thin_legend(handles[1:], names[1:], len(layers))  # the edge, then the layers
    handles += [Line2D([], [], marker="o", color="0.3", mfc="white", mew=1.5, ls="", ms=7, label="start"),
                Line2D([], [], marker="s", color="0.3", ls="", ms=6, label="end"),
                Line2D([], [], marker="*", color="0.3", mec="black", ls="", ms=12,
                       label=f"optimal (min test loss), epoch {int(epochs[best])}")]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, frameon=False)
    return fig


# ------------------------------------------------------------------------------ scalar figures


@_styled
def plot_coupling(trace: TraceLike, layers: Optional[Sequence[str]] = None, *, fit_epochs: int = 50,
                  x: Optional[str] = None) -> Figure:
    """J² and J0 against epoch, the linear growth of J² fitted over the ordered part of the first
    ``fit_epochs`` epochs (EOC-training: slope A ∝ η/((1−α)B)), and the edge J² = J_c².

    Args:
        trace: an open trace or its path.
        layers: default: the square layers (the iterated maps EOC-training's scaling laws are about),
            else every layer. J² is drawn on a log axis when the layers' scales differ by > 30×.
        fit_epochs: the linear fit uses checkpoints up to this epoch (and below the edge).
        x: the horizontal axis, ``epoch`` or ``step`` (default: the run's checkpoint unit).
    """
    with _opened(trace) as tr:
        _require_checkpoints(tr)
        xs, x = checkpoint_axis(tr, x)
        if layers is None:
            coupled = [n for n in tr.layers if _has_matrix(tr, n)]  # chains and model maps have no single J
            layers = [n for n in coupled if tr.layer_info(n).get("square")] or coupled
        layers = list(layers)
        for layer in layers:
            _require_matrix(tr, layer, "The coupling figure")
        epochs, best = tr.epoch_fraction, optimal_index(tr)
        jc2 = critical_coupling(run_activation(tr)) ** 2
        series = {layer: (tr.stat(layer, "J") ** 2, tr.stat(layer, "J0"), _layer_label(tr, layer)) for layer in layers}
    fig = Figure(figsize=(11, 4.6), layout="constrained")
    a1, a2 = fig.subplots(1, 2)
    ms = 3 if len(epochs) <= 60 else 0
    layer_handles, fit_handles = [], []
    for color, layer in zip(layer_colors(len(layers)), layers):
        j2, j0, label = series[layer]
        layer_handles += a1.plot(xs, j2, "o-", color=color, ms=ms, lw=1.5, label=label)
        slope, icpt = linear_growth_fit(epochs, j2, max_epoch=fit_epochs, edge=jc2)  # always per epoch
        if np.isfinite(slope) and len(layers) <= 7:  # with many layers the fits would bury the data
            first = int(np.flatnonzero((epochs <= fit_epochs) & (j2 < jc2))[0])
            drawn = slice(first, None)  # from the first fitted checkpoint to the last, in the axis' units
            fit_handles += a1.plot(xs[drawn], icpt + slope * epochs[drawn], "--", color=color, lw=1.1,
                                   label=f"{layer}: linear fit $J^2 = {icpt:.3g} + A\\,t$, A = {slope:.3g} per epoch")
        a2.plot(xs, j0, "o-", color=color, ms=ms, lw=1.5, label=label)
    edge_handle = a1.axhline(jc2, color=EDGE_COLOR, ls="-", lw=1, label=f"edge of chaos $J^2 = {jc2:g}$")
    j2_all = np.concatenate([series[n][0] for n in layers])
    j2_pos = j2_all[np.isfinite(j2_all) & (j2_all > 0)]
    if len(j2_pos) and j2_pos.max() / j2_pos.min() > 30:
        _log_y(a1)
    else:
        lo, hi = a1.get_ylim()
        a1.set_ylim(0, max(hi, jc2 * 1.15))
    a2.axhline(0, color="0.6", lw=0.8)
    for ax in (a1, a2):
        _mark_optimum(ax, xs[best])
        _epoch_axis(ax, x)
    a1.set_ylabel(r"$J^2$  (squared coupling spread, $J = \mathrm{std}(W)\sqrt{N}$)")
    a2.set_ylabel(r"$J_0$  (mean coupling, $\mathrm{mean}(W)\,N$)")
    a1.set_title(r"$J^2$ grows linearly while ordered")
    a2.set_title(r"Mean coupling $J_0$")
    handles = _thin_legend(layer_handles, [h.get_label() for h in layer_handles], len(layers))
    handles += fit_handles + [edge_handle, _optimum_handle(xs[best], x)]
    fig.legend(handles=handles, loc="outside lower center", ncols=2 if fit_handles else 3, frameon=False)
    return fig


@_styled
def plot_metrics(trace: TraceLike, x: Optional[str] = None) -> Figure:
    """Train and test loss (cross-entropy without the decay term) and accuracy; the optimal epoch marked.
    A regression run (trace ``loss`` mse) shows the mean squared error and R² instead (it has no accuracy).

    ``x``: the horizontal axis, ``epoch`` or ``step`` (default: the run's checkpoint unit).
    """
    with _opened(trace) as tr:
        _require_checkpoints(tr)
        (epochs, x), best = checkpoint_axis(tr, x), optimal_index(tr)
        score = "r2" if tr.is_regression else "acc"
        m = {name: tr.metric(name) for name in ("train_loss", "test_loss", f"train_{score}", f"test_{score}")}
    fig = Figure(figsize=(11, 4.4), layout="constrained")
    a1, a2 = fig.subplots(1, 2)
    ms = 3 if len(epochs) <= 60 else 0
    for ax, kind, scale in ((a1, "loss", 1.0), (a2, score, 100.0 if score == "acc" else 1.0)):
        ax.plot(epochs, m[f"train_{kind}"] * scale, "o-", ms=ms, color=COLORS[0], label="train")
        ax.plot(epochs, m[f"test_{kind}"] * scale, "o-", ms=ms, color=COLORS[1], label="test")
        _mark_optimum(ax, epochs[best])
        ax.plot(epochs[best], m[f"test_{kind}"][best] * scale, "*", color=COLORS[1], mec="black", ms=14, zorder=5)
        _epoch_axis(ax, x)
    _log_y(a1)
    where = f"step {int(epochs[best])}" if x == "step" else f"epoch {epochs[best]:g}"
    if score == "r2":
        a1.set_ylabel("mean squared error (log scale)")
        a2.set_ylabel(r"$R^2 = 1 - \mathrm{SSE}/\mathrm{SST}$")
        a1.set_title(f"MSE; minimum test MSE {m['test_loss'][best]:.4g} at {where}")
        a2.set_title(f"$R^2$; test $R^2$ {m['test_r2'][best]:.4f} at the optimum")
        finite = np.concatenate([m["train_r2"], m["test_r2"]])
        finite = finite[np.isfinite(finite)]
        if len(finite) and finite.min() < -1:  # a random start far from the targets: keep the trained part readable
            a2.set_ylim(-1, 1)
    else:
        a1.set_ylabel("cross-entropy loss (nats, log scale)")
        a2.set_ylabel("accuracy (%)")
        a1.set_title(f"Loss; minimum test loss {m['test_loss'][best]:.4g} at {where}")
        a2.set_title(f"Accuracy; test accuracy {100 * m['test_acc'][best]:.2f}% at the optimum")
    handles = a1.get_legend_handles_labels()[0] + [
        Line2D([], [], marker="*", color=COLORS[1], mec="black", ls="", ms=12, label="test value at the optimum"),
        _optimum_handle(epochs[best], x)]
    fig.legend(handles=handles, loc="outside lower center", ncols=4, frameon=False)
    return fig


MAP_PANELS = (  # stat, panel title, y label, edge value
    ("s_mean", "asymptotic Jacobian norm (M1)", r"$s = \|\partial F(x_T)\|_F / \sqrt{N}$", 1.0),
    ("lambda_max", "largest Lyapunov exponent (Benettin)", r"$\lambda_{\max}$  (1/step)", 0.0),
    ("asymptotic_distance", "asymptotic distance of two orbits (M4)", r"$D_\infty$", 0.0),
)


@_styled
def plot_layer_stability(trace: TraceLike, layers: Optional[Sequence[str]] = None, x: Optional[str] = None) -> Figure:
    """Per square layer (one row each): s (mean ± std over start states), λ_max (Benettin) and the
    asymptotic distance against epoch, test loss on a twin axis, the edge drawn (EOC-optimality).

    Raises:
        TraceError: no requested layer is square or the maps were not recorded (analysis=economy).
    """
    stats = [p[0] for p in MAP_PANELS] + ["s_std"]
    with _opened(trace) as tr:
        _require_checkpoints(tr)
        chosen = layers is not None
        layers = _layers_with(tr, stats, "The layer-stability figure", _MAPS_OPTION, layers)
        n_iterated = len(layers)
        if not chosen:
            layers = layers[:MAX_STABILITY_ROWS]
        (epochs, x), best = checkpoint_axis(tr, x), optimal_index(tr)
        loss = tr.metric("test_loss")
        values = {layer: {s: tr.stat(layer, s) for s in stats} for layer in layers}
    fig = Figure(figsize=(14, 3.9 * len(layers) + 0.6), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(layers), 3, squeeze=False))
    ms = 3 if len(epochs) <= 60 else 0
    for row, layer in zip(axes, layers):
        v = values[layer]
        for ax, (stat, title, ylabel, edge) in zip(row, MAP_PANELS):
            y = v[stat]
            finite = y[np.isfinite(y)]
            e = _power_of_ten(float(finite.min()), float(finite.max())) if len(finite) else 0
            f = 10.0 ** -e  # tiny D∞ (1e-9 when ordered): the factor goes into the label, not an offset text
            if stat == "s_mean":
                ax.fill_between(epochs, v["s_mean"] - v["s_std"], v["s_mean"] + v["s_std"], color=COLORS[0],
                                alpha=0.2, lw=0)
            ax.plot(epochs, y * f, "o-", ms=ms, color=COLORS[0], lw=1.6)
            ax.axhline(edge, color=EDGE_COLOR, lw=1, ls="-")
            _mark_optimum(ax, epochs[best])
            _epoch_axis(ax, x)
            ax.set_ylabel(ylabel + (rf"  ($\times 10^{{{e}}}$)" if e else ""), color=COLORS[0])
            ax.set_title(f"{layer}: {title}")
            twin = ax.twinx()
            twin.plot(epochs, loss, "--", color=LOSS_COLOR, lw=1.3, label="test loss")
            _log_y(twin)
            twin.set_ylabel("test loss (nats, log scale)", color=LOSS_COLOR)
            twin.spines["right"].set_visible(True)
            twin.tick_params(axis="y", which="both", colors=LOSS_COLOR)
            ax.set_zorder(twin.get_zorder() + 1)  # the statistic above the loss curve
            ax.patch.set_visible(False)
    handles = [Line2D([], [], color=COLORS[0], marker="o", ms=3, lw=1.6, label="layer statistic"),
               Patch(color=COLORS[0], alpha=0.2, lw=0, label="± std of s over start states"),
               Line2D([], [], color=EDGE_COLOR, lw=1,
                      label=r"edge of chaos ($s = 1$, $\lambda_{\max} = 0$); $D_\infty = 0$: ordered"),
               Line2D([], [], color=LOSS_COLOR, ls="--", lw=1.3, label="test loss (right axis)"),
               _optimum_handle(epochs[best], x)]
    fig.legend(handles=handles, loc="outside lower center", ncols=5, frameon=False)
    more = f"; the first {len(layers)} of {n_iterated} iterated records (choose with layers=[...])" \
        if len(layers) < n_iterated else ""
    fig.suptitle(f"Stability of the iterated layer maps over training (EOC-optimality){more}")
    return fig


# ------------------------------------------------------------------------------ per-checkpoint panels


def _panel_limits(values: np.ndarray, min_half: float) -> tuple[float, float]:
    """A symmetric window around the points, never narrower than ±min_half (a fixed point is one dot)."""
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    mid, half = (lo + hi) / 2, max((hi - lo) / 2 * 1.12, min_half)
    return mid - half, mid + half


def _power_of_ten(lo: float, hi: float) -> int:
    """The exponent to factor out of an axis spanning [lo, hi] (0 when plain numbers read well)."""
    top = max(abs(lo), abs(hi))
    if top == 0 or not np.isfinite(top):
        return 0
    e = int(np.floor(np.log10(top)))
    return e if e < -2 or e > 3 else 0


# Start-state colours of the return maps: Okabe–Ito without yellow (invisible on white), then grey.
_STATE_COLORS = COLORS[:7] + ("#999999",)


@_styled
def plot_poincare(trace: TraceLike, layer: Optional[str] = None, epochs: Optional[Sequence[int]] = None) -> Figure:
    """Poincaré return maps (M5) of a square layer's iterated map, one panel per checkpoint.

    Each panel shows (X_t, X_{t+1}), X_t = ⟨x_t, m̂⟩ over the second half of the orbit, for the stored
    start states (one colour each): a fixed point is one dot, a period-L cycle L dots, a torus a closed
    curve, chaos a cloud.

    Args:
        trace: an open trace or its path.
        layer: a square layer with maps; default: the first one.
        epochs: checkpoints to show; default: start, optimal and last.
    """
    with _opened(trace) as tr:
        layer, idx, ck, best = _snapshot_panels(tr, "poincare", "The Poincaré return map", _MAPS_OPTION, layer, epochs)
        points = tr.stat(layer, "poincare")[idx]  # (k, starts, T/2, 2)
        extra = {n: tr.stat(layer, n)[idx] for n in ("attractor", "period", "lambda_max") if n in tr.stats(layer)}
    rows, cols = _grid(len(idx))
    fig = Figure(figsize=(3.6 * cols + 0.4, 3.7 * rows + 0.8), layout="constrained")
    axes = np.asarray(fig.subplots(rows, cols, squeeze=False)).ravel()
    for k, (ax, i) in enumerate(zip(axes, idx)):
        p, e = points[k], 0
        finite = np.isfinite(p).all(-1)
        if not finite.any():
            ax.text(0.5, 0.5, "no points\n(the orbit stopped early)", ha="center", va="center", transform=ax.transAxes)
        else:
            both = p[finite]
            scale = max(float(np.nanmax(np.abs(both))), 1e-12)
            lo, hi = _panel_limits(both, 0.05 * scale + 1e-3)
            e = _power_of_ten(lo, hi)
            f = 10.0 ** -e  # plot in units of 10^e: no offset text crowding the ticks
            for s in range(p.shape[0]):
                q = p[s][finite[s]] * f
                few = len(np.unique(np.round(q / max(hi - lo, 1e-300) / f, 3), axis=0)) <= 32  # dots, not a cloud
                ax.plot(q[:, 0], q[:, 1], "o" if few else ".", ms=7 if few else 2.5, mec="white" if few else "none",
                        mew=0.6, color=_STATE_COLORS[s % len(_STATE_COLORS)], alpha=0.9 if few else 0.7)
            ax.plot([lo * f, hi * f], [lo * f, hi * f], color="0.6", lw=0.8, zorder=0)
            ax.set_xlim(lo * f, hi * f)
            ax.set_ylim(lo * f, hi * f)
        unit = rf"  ($\times 10^{{{e}}}$)" if e else ""
        ax.set_aspect("equal", adjustable="box")
        ax.set_xlabel(r"$X_t = \langle x_t, \hat m\rangle$" + unit)
        ax.set_ylabel(r"$X_{t+1}$" + unit)
        ax.ticklabel_format(useOffset=False)
        what = [f"epoch {int(ck[i])}" + (" (optimal)" if i == best else "")]
        if "attractor" in extra:
            a, per = str(extra["attractor"][k]).replace("_", " "), int(extra["period"][k])
            what.append(f"{a}" + (f", period {per}" if a == "periodic" and per > 1 else ""))
        if "lambda_max" in extra and np.isfinite(extra["lambda_max"][k]):
            what.append(rf"$\lambda_{{\max}}$ = {extra['lambda_max'][k]:.3g}")
        ax.set_title("\n".join([what[0], ", ".join(what[1:])]) if len(what) > 1 else what[0])
    for ax in axes[len(idx):]:
        ax.set_visible(False)
    fig.suptitle(f"Poincaré return maps of layer {layer!r} (one colour per start state; grey: $X_{{t+1}} = X_t$)")
    return fig


@_styled
def plot_eigenvalues(trace: TraceLike, layer: Optional[str] = None, epochs: Optional[Sequence[int]] = None) -> Figure:
    """Eigenvalues of a square layer's weight matrix in the complex plane, one panel per checkpoint,
    with the unit circle and the circular-law radius J of a random matrix with the same spread.

    Args:
        trace: an open trace or its path.
        layer: a square layer with eigenvalues; default: the first one.
        epochs: checkpoints to show; default: start, optimal and last.
    """
    with _opened(trace) as tr:
        layer, idx, ck, best = _snapshot_panels(tr, "eigenvalues", "The eigenvalue figure", _EIGEN_OPTION, layer, epochs)
        ev = tr.stat(layer, "eigenvalues")[idx]  # (k, N, 2): real, imaginary
        j = tr.stat(layer, "J")[idx]
        radius = tr.stat(layer, "spectral_radius")[idx] if "spectral_radius" in tr.stats(layer) else None
    rows, cols = _grid(len(idx))
    fig = Figure(figsize=(3.6 * cols + 0.4, 3.8 * rows + 0.8), layout="constrained")
    axes = np.asarray(fig.subplots(rows, cols, squeeze=False)).ravel()
    theta = np.linspace(0, 2 * np.pi, 361)
    for k, (ax, i) in enumerate(zip(axes, idx)):
        re, im = ev[k, :, 0], ev[k, :, 1]
        ax.plot(np.cos(theta), np.sin(theta), color=EDGE_COLOR, lw=1.1, zorder=1)
        ax.plot(j[k] * np.cos(theta), j[k] * np.sin(theta), "--", color=COLORS[1], lw=1.1, zorder=1)
        ax.plot(re, im, ".", ms=2.5, color=COLORS[0], alpha=0.7, zorder=2)
        r = max(1.15, float(np.nanmax(np.hypot(re, im))) * 1.08 if np.isfinite(re).any() else 1.15, j[k] * 1.08)
        ax.set_xlim(-r, r)
        ax.set_ylim(-r, r)
        ax.set_aspect("equal", adjustable="box")
        ax.axhline(0, color="0.8", lw=0.6, zorder=0)
        ax.axvline(0, color="0.8", lw=0.6, zorder=0)
        ax.set_xlabel(r"Re $\lambda$")
        ax.set_ylabel(r"Im $\lambda$")
        title = f"epoch {int(ck[i])}" + (" (optimal)" if i == best else "")
        title += f"\nJ = {j[k]:.3f}" + (f", spectral radius {radius[k]:.3f}" if radius is not None else "")
        ax.set_title(title)
    for ax in axes[len(idx):]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=COLORS[0], marker=".", ls="", label="eigenvalues of W"),
               Line2D([], [], color=EDGE_COLOR, lw=1.1, label="unit circle |λ| = 1"),
               Line2D([], [], color=COLORS[1], ls="--", lw=1.1, label="circular law |λ| = J (random W)")]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, frameon=False)
    fig.suptitle(f"Eigenvalues of layer {layer!r} in the complex plane")
    return fig


# ------------------------------------------------------------------------------ several runs


def run_labels(traces: Sequence[Trace]) -> list[str]:
    """Short labels from the config values that differ between runs (else the run folders)."""
    from stabilityscope.analysis.collection import flatten_config, varying_config

    configs = [flatten_config(tr.config or {}) for tr in traces]
    keys = varying_config(configs)
    if keys:
        last = [k.split(".")[-1] for k in keys]
        # the last part of a key when it says what it is (weight_decay), the whole key otherwise (analysis.name)
        short = [k if last.count(k.split(".")[-1]) > 1 or k.split(".")[-1] in ("name", "enabled", "kind")
                 else k.split(".")[-1] for k in keys]
        return [", ".join(f"{s} = {c.get(k)}" for s, k in zip(short[:3], keys[:3])) for c in configs]
    return [f"{tr.path.parent.name}" for tr in traces]


@_styled
def plot_comparison(traces: Sequence[TraceLike], labels: Optional[Sequence[str]] = None, layer: Optional[str] = None,
                    *, background: Union[bool, BackgroundSpec, Any] = False,
                    cache: Optional[Union[str, Path]] = None) -> Figure:
    """Several runs side by side (e.g. weight-decay values): the paths of one layer on the phase plane,
    its J² against epoch, and the test loss with each run's optimum (★).

    Args:
        traces: open traces or paths (a sweep: ``ss.collection.find_traces(sweep_dir)``).
        labels: one per run; default: the config values that differ between the runs.
        layer: the layer to compare; default: the first square layer common to all runs (else the
            first common layer).
        background: as in :func:`plot_phase_path` (default False: theory edge only).
        cache: folder of cached backgrounds.
    """
    if not len(traces):
        raise TraceError("plot_comparison needs at least one trace.")
    opened = [tr if isinstance(tr, Trace) else open_trace(tr) for tr in traces]
    try:
        for tr in opened:
            _require_checkpoints(tr)
        common = [n for n in opened[0].layers if all(n in tr.layers and _has_matrix(tr, n) for tr in opened)]
        if layer is None:
            if not common:
                raise TraceError("The runs share no layer name to compare: "
                                 + "; ".join(f"{tr.path}: {', '.join(tr.layers)}" for tr in opened))
            square = [n for n in common if all(tr.layer_info(n).get("square") for tr in opened)]
            layer = (square or common)[0]
        for tr in opened:
            _require_matrix(tr, layer, "The comparison")
        labels = list(labels) if labels is not None else run_labels(opened)
        if len(labels) != len(opened):
            raise ValueError(f"{len(labels)} labels for {len(opened)} runs")
        acts = {run_activation(tr) for tr in opened}
        runs = []
        for tr in opened:
            x, y = phase_plane(tr.stat(layer, "J0"), tr.stat(layer, "J"))
            runs.append(dict(epochs=tr.checkpoints, x=np.atleast_1d(x), y=np.atleast_1d(y), best=optimal_index(tr),
                             j2=tr.stat(layer, "J") ** 2, loss=tr.metric("test_loss"), kind=tr.loss))
    finally:
        for tr, src in zip(opened, traces):
            if tr is not src:
                tr.close()
    activation = next(iter(acts)) if len(acts) == 1 else None
    colors = list(COLORS[:7]) if len(runs) <= 7 else [matplotlib.colormaps["cividis"](v) for v in np.linspace(0, 0.9, len(runs))]
    fig = Figure(figsize=(15, 5.0), layout="constrained")
    a1, a2, a3 = fig.subplots(1, 3)
    diagram = None
    if activation and (background is True or isinstance(background, BackgroundSpec)):
        diagram = phase_background(activation, background if isinstance(background, BackgroundSpec) else BackgroundSpec(), cache)
    elif activation and background not in (False, None, True):
        diagram = background
    y_top = max(2.5, max(float(np.nanmax(r["y"][np.isfinite(r["y"])], initial=0)) for r in runs) * 1.05)
    if diagram is not None:
        _draw_background(fig, a1, diagram)
    edge_styles = {act: ls for act, ls in zip(sorted(acts), ("-", "--", ":"))}  # runs may differ in activation
    for act, ls in edge_styles.items():
        _draw_edge(a1, act, y_top, ls)
    xs = np.concatenate([r["x"][np.isfinite(r["x"])] for r in runs])
    # zoom on the paths, keeping the J = J_c segment (|J0/J| <= 1) in view
    x_lim = (min(-1.2, xs.min() - 0.3) if len(xs) else -2.0, max(1.2, xs.max() + 0.3) if len(xs) else 2.0)
    if diagram is not None:
        x_lim = tuple(npd.cell_edges(diagram.j0_over_j)[[0, -1]])
    for c, r, label in zip(colors, runs, labels):
        _draw_path(a1, r["x"], r["y"], c, r["best"], label, (x_lim[1] - x_lim[0], y_top), max_arrows=2)
        a2.plot(r["epochs"], r["j2"], "-", color=c, lw=1.6, label=label)
        a3.plot(r["epochs"], r["loss"], "-", color=c, lw=1.6, label=label)
        a3.plot(r["epochs"][r["best"]], r["loss"][r["best"]], "*", color=c, mec="black", ms=13, zorder=5)
        a2.plot(r["epochs"][r["best"]], r["j2"][r["best"]], "*", color=c, mec="black", ms=13, zorder=5)
    a1.set_xlim(*x_lim)
    a1.set_ylim(0, y_top)
    a1.set_xlabel(r"$J_0/J$")
    a1.set_ylabel(r"$1/J$")
    a1.set_title(f"Paths of layer {layer!r} (○ start, ■ end, ★ optimal)")
    for act, ls in edge_styles.items():
        a2.axhline(critical_coupling(act) ** 2, color=EDGE_COLOR, lw=1, ls=ls)
    _epoch_axis(a2)
    a2.set_ylabel(r"$J^2$ (squared coupling spread)")
    a2.set_title(r"$J^2$ against epoch (★ optimal)")
    _epoch_axis(a3)
    _log_y(a3)
    kinds = {r["kind"] for r in runs}
    a3.set_ylabel("test loss (" + ("mean squared error" if kinds == {"mse"} else "cross-entropy, nats"
                                   if kinds == {"cross_entropy"} else "cross-entropy or MSE") + ", log scale)")
    a3.set_title("Test loss (★ minimum)")
    # long labels (many differing config values) wrap, so the legend never widens the figure
    run_handles = [Line2D([], [], color=c, lw=2, label=textwrap.fill(str(lab), 48)) for c, lab in zip(colors, labels)]
    edge_handles = [Line2D([], [], color=EDGE_COLOR, lw=1.4, ls=ls,
                           label=r"edge of chaos (mean-field $\chi = 1$; $J^2 = J_c^2$)"
                           + (f", {act}" if len(edge_styles) > 1 else "")) for act, ls in edge_styles.items()]
    fig.legend(handles=run_handles + edge_handles, loc="outside lower center",
               ncols=min(len(run_handles) + len(edge_handles), 3), frameon=False)
    fig.suptitle(f"Comparison of {len(runs)} runs")
    return fig


# ------------------------------------------------------------------------------ decision-region geometry

OUR_INSTANTIATION = "our instantiation of FC-geometry (van den Berg, arXiv:1605.00329)"


def geometry_layers(tr) -> list[str]:  # noqa: ANN001 (a Trace)
    """The layers of a trace that record the geometry statistics and have a transition band or active set."""
    return [n for n in tr.layers if all(s in tr.stats(n) for s in GEOMETRY_STATS)
            and np.isfinite(tr.stat(n, "in_band_fraction")).any()]


@_styled
def plot_geometry(trace: TraceLike, layers: Optional[Sequence[str]] = None) -> Figure:
    """Band half-width, in-band fraction and gradient share of in-band samples against epoch, beside J².

    Args:
        trace: an open trace or its path (recorded with ``analysis.geometry=true``).
        layers: default: every layer with a band (or, for ReLU-like units, an active set).
    """
    with _opened(trace) as tr:
        _require_checkpoints(tr)
        if layers is None:
            layers = geometry_layers(tr)
        layers = list(layers)
        if not layers:
            raise TraceError(f"{tr.path} records no decision-region geometry with a transition band (run with "
                             f"analysis.geometry=true; layers need a tanh, sigmoid or ReLU-like activation).")
        for n in layers:
            missing = [s for s in GEOMETRY_STATS if s not in tr.stats(n)]
            if missing:
                raise TraceError(f"Layer {n!r} of {tr.path} lacks the geometry statistics {', '.join(missing)}; "
                                 f"record them with analysis.geometry=true.")
        epochs, best = tr.checkpoints, optimal_index(tr)
        delta = float(config_section(tr.config, "analysis").get("geometry_delta", 0.1))
        n_samples = config_section(tr.config, "analysis").get("geometry_samples", "?")
        data = {n: {s: tr.stat(n, s) for s in (*GEOMETRY_STATS, "J")} | {"label": _layer_label(tr, n),
                                                                          "act": str(tr.layer_info(n).get("activation", ""))}
                for n in layers}
    fig = Figure(figsize=(12, 7.2), layout="constrained")
    axes = fig.subplots(2, 2)
    (a_j, a_h), (a_f, a_g) = axes
    ms = 3 if len(epochs) <= 60 else 0
    handles = []
    for color, n in zip(layer_colors(len(layers)), layers):
        d = data[n]
        handles += a_j.plot(epochs, d["J"] ** 2, "o-", color=color, ms=ms, lw=1.5, label=d["label"])
        a_h.plot(epochs, d["band_halfwidth_mean"], "o-", color=color, ms=ms, lw=1.5)
        a_h.plot(epochs, d["band_halfwidth_median"], "--", color=color, lw=1)
        a_h.plot(epochs, d["mean_abs_distance"], ":", color=color, lw=1.2)
        relu = band_kind(d["act"]) == "relu"
        a_f.plot(epochs, d["in_band_fraction"], "o-" if not relu else "s-", color=color, ms=ms, lw=1.5)
        a_g.plot(epochs, d["gradient_share_in_band"], "o-", color=color, ms=ms, lw=1.5)
    a_j.axhline(1.0, color=EDGE_COLOR, lw=1)
    a_j.set_ylabel(r"$J^2$  (tanh edge of chaos: $J^2 = 1$)")
    a_j.set_title(r"Coupling $J^2$ (EOC-training)")
    a_h.set_ylabel(r"distance in input space")
    a_h.set_title(rf"Band half-width $c_\varphi(\delta)/\|w_k\|$, $\delta$ = {delta:g}: mean (—), median (– –); "
                  r"mean $|d|$ (···)", fontsize=9.5)
    a_f.set_ylabel("fraction of (sample, unit) pairs")
    a_f.set_title("Mean in-band fraction (ReLU-like: active fraction)")
    a_f.set_ylim(0, 1.02)
    a_g.set_ylabel("share of per-sample squared gradient norm")
    a_g.set_title("Gradient carried by in-band samples")
    a_g.set_ylim(min(0.0, a_g.get_ylim()[0]), 1.02)
    for ax in axes.flat:
        _mark_optimum(ax, epochs[best])
        _epoch_axis(ax)
    fig.suptitle(f"Decision-region geometry on {n_samples} fixed training inputs ({OUR_INSTANTIATION})", fontsize=10.5)
    fig.legend(handles=handles + [_optimum_handle(int(epochs[best]))], loc="outside lower center",
               ncols=min(4, len(handles) + 1), frameon=False)
    return fig


# ------------------------------------------------------------------------------ all figures of a run


# ------------------------------------------------------------------------------ SGD-complexity


@_styled
def plot_explainability(trace: TraceLike, x: Optional[str] = None, threshold: float = 0.9) -> Figure:
    """SGD-complexity over training: I(F_t;Y) and μ_Y(F_t;L) with their bootstrap bands, the level I(L;Y)
    (left), and the explained share μ/I(F_t;Y) with the end of the linear phase (right).

    Args:
        trace: an open trace or its path, recorded with ``analysis.explainability=true``.
        x: ``step`` (log axis, the default for step schedules) or ``epoch``.
        threshold: the share that counts as "explained by L" (Nakkiran et al. use 0.9 informally).
    """
    with _opened(trace) as tr:
        _require_checkpoints(tr)
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
    a1.axhline(table["info_L_Y"], color=EDGE_COLOR, lw=1, label=f"$I(L;Y)$ = {table['info_L_Y']:.3f} bits "
                                                                 f"(L: test accuracy {100 * table['baseline_test_acc']:.1f}%)")
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
        _epoch_axis(ax, x)
    handles = a1.get_legend_handles_labels()[0] + [
        Patch(color="0.5", alpha=0.3, lw=0, label="bootstrap interval"),
        Line2D([], [], color=EDGE_COLOR, ls="--", lw=1, label=f"share {threshold:g}"),
        Line2D([], [], color="0.35", ls=":", lw=1.2, label="end of the linear phase")]
    warn = "" if table["baseline_converged"] else "  [baseline L did not converge: approximate]"
    fig.legend(handles=handles, loc="outside lower center", ncols=3, frameon=False)
    fig.suptitle("How much of the network a linear classifier explains (SGD-complexity)" + warn)
    return fig


@_styled
def plot_complexity_matrix(trace: TraceLike, relative: bool = True) -> Figure:
    """Heat map of μ_Y(F_t; F_s) for every pair of checkpoints (SGD-complexity's increasing complexity).

    Row t, column s: how much of F_t's information about the labels F_s explains; with ``relative``
    divided by I(F_t; Y) (1 = F_s explains all of F_t), rows of the initialisation and of checkpoints
    with less than a tenth of the best I(F;Y) left blank (grey). Below the diagonal s < t: earlier
    checkpoints.
    """
    with _opened(trace) as tr:
        _require_checkpoints(tr, 2)
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


FIGURES = ("phase_path", "coupling", "metrics", "layer_stability", "poincare", "eigenvalues", "geometry",
           "explainability", "complexity_matrix")


def _with_baseline(tr: Trace, plot: Callable[[Trace], Figure]) -> Figure:
    """Draw ``plot`` for runs that measured SGD-complexity (the default figures of other runs stay as they were)."""
    if tr.baseline is None:
        raise TraceError(f"{tr.path} records no SGD-complexity measures (analysis.explainability=true).")
    return plot(tr)


def draw_figures(trace: TraceLike, out_dir: Union[str, Path], *,
                 background: Union[bool, BackgroundSpec] = True, cache: Optional[Union[str, Path]] = None,
                 formats: Sequence[str] = ("png", "pdf")) -> tuple[dict[str, Path], dict[str, str]]:
    """Every figure of one run into ``out_dir`` (PNG, and PDF unless ``formats`` leaves it out).

    Returns:
        (written, skipped): the PNG of each figure drawn, by name; and for each figure the trace
        cannot support (e.g. no iterated maps with ``analysis=economy``) the reason.
    """
    out = Path(out_dir)
    written: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    with _opened(trace) as tr:
        _require_checkpoints(tr)
        makers: dict[str, Callable[[], Figure]] = {
            "phase_path": lambda: plot_phase_path(tr, background=background, cache=cache),
            "coupling": lambda: plot_coupling(tr),
            "metrics": lambda: plot_metrics(tr),
            "layer_stability": lambda: plot_layer_stability(tr),
            "poincare": lambda: plot_poincare(tr),
            "eigenvalues": lambda: plot_eigenvalues(tr),
            "geometry": lambda: plot_geometry(tr),
            "explainability": lambda: plot_explainability(tr),
            "complexity_matrix": lambda: _with_baseline(tr, plot_complexity_matrix),
        }
        for name in FIGURES:
            try:
                fig = makers[name]()
            except TraceError as exc:  # e.g. no iterated maps (analysis=economy), no layer with (J0, J)
                skipped[name] = str(exc)
                continue
            written[name] = save_figure(fig, out, name, ("png", *(f for f in formats if f != "png")))[0]
    return written, skipped


def training_figures(trace_path: Union[str, Path], out_dir: Union[str, Path], *,
                     background: Union[bool, BackgroundSpec] = True,
                     cache: Optional[Union[str, Path]] = None) -> list[Path]:
    """Draw every figure one run supports into ``out_dir``; returns the PNG paths."""
    written, _ = draw_figures(trace_path, out_dir, background=background, cache=cache)
    return list(written.values())


# ------------------------------------------------------------------------------- Spline-FC: init comparison

INIT_COLORS = {"random": COLORS[0], "mars": COLORS[1]}


def _stacked(curves: Sequence[Any], field: str) -> np.ndarray:
    """(runs, checkpoints) of one field, NaN after a run's end (a diverged run stops early)."""
    n = max(len(getattr(c, field)) for c in curves)
    out = np.full((len(curves), n), np.nan)
    for i, c in enumerate(curves):
        v = getattr(c, field)
        out[i, : len(v)] = v
    return out


@_styled
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
    from stabilityscope.analysis.init_comparison import comparison_groups, init_curves

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
                _log_y(ax)
            if len(values):
                ax.set_ylim(values.min() * 0.97, top)
            ax.set_ylabel("test MSE" if regression else "test loss (cross-entropy, nats)")
        _epoch_axis(row[0])
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
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield
