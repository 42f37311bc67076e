"""Figures on the phase plane (J0/J, 1/J): a run's training path over the numerical phase diagram, and the diagram.

=========================  ======================================================================
``plot_phase_path``        the path (J0/J, 1/J) over checkpoints on the numerical phase diagram of
                           the run's activation, theoretical edge overlaid; arrows for direction,
                           markers for start, end and the optimal checkpoint (EOC-training)
``plot_phase_diagram``     a computed :class:`~stabilityscope.theory.numerical_phase_diagram.PhaseDiagram`
                           as a heatmap with the mean-field edge, written to a PNG
=========================  ======================================================================

The numerical phase diagram behind the path (:func:`phase_background`, docs/science/mean-field.md) is computed
once per (activation, grid, N, T, seed) and cached on disk under ``$STABILITYSCOPE_CACHE`` (default
``$XDG_CACHE_HOME/stabilityscope`` or ``~/.cache/stabilityscope``). Its default (N = 500, T = 200,
41 × 25 cells) is a *picture*: finite N and T smear the transition, so the heatmap's boundary lies
near, not on, the mean-field edge; the colour bar states N and T.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Optional, Sequence, Union

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from stabilityscope.analysis.readout import (
    TraceLike,
    has_matrix,
    layer_label,
    opened,
    optimal_index,
    require_checkpoints,
    require_matrix,
    run_activation,
)
from stabilityscope.errors import TraceError
from stabilityscope.plots.style import (
    BACKGROUND_CMAP,
    EDGE_COLOR,
    HALO,
    SEPARATION_FLOOR,
    layer_colors,
    styled,
    thin_legend,
)
from stabilityscope.recording.trace import Trace
from stabilityscope.theory import numerical_phase_diagram as npd
from stabilityscope.theory.meanfield import edge_curve, phase_plane

if TYPE_CHECKING:
    from stabilityscope.theory.meanfield import EdgeCurve

__all__ = ["BackgroundSpec", "cache_dir", "draw_background", "draw_edge", "draw_path", "edge_up_to", "phase_background",
           "plot_phase_diagram", "plot_phase_path"]


@dataclass(frozen=True)
class BackgroundSpec:
    """The numerical phase diagram drawn behind training paths (docs/science/mean-field.md).

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


def draw_background(fig: Figure, ax: Any, diagram: Any) -> None:
    """Log-scale heatmap of the asymptotic separation, clipped to [floor, 1]; diverged cells at the top."""
    sep = np.asarray(diagram.separation, dtype=np.float64)
    sep = np.where(np.isfinite(sep), np.clip(sep, SEPARATION_FLOOR, 1.0), 1.0)  # ReLU overflow = chaotic
    mesh = ax.pcolormesh(npd.cell_edges(diagram.j0_over_j), npd.cell_edges(diagram.inv_j), sep, cmap=BACKGROUND_CMAP,
                         norm=LogNorm(SEPARATION_FLOOR, 1.0), shading="flat", zorder=0, rasterized=True)
    cb = fig.colorbar(mesh, ax=ax, shrink=0.85, pad=0.02)
    cb.set_label(r"asymptotic separation $\langle\|x_t - x'_t\|\rangle$ (clipped to 1)"
                 f"\nrandom networks, N = {diagram.n}, T = {diagram.steps}: finite N and T blur the transition")


def draw_edge(ax: Any, curve: "EdgeCurve", ls: str = "-") -> None:
    """The mean-field edge χ = 1 (both branches and the J = J_c segment, :meth:`EdgeCurve.polyline`), black
    with a white halo so that it stays legible on the heatmap."""
    x, y = curve.polyline()
    ax.plot(x, y, color=EDGE_COLOR, lw=1.6, ls=ls, path_effects=HALO, zorder=2,
            label=r"edge of chaos (mean-field $\chi = 1$)")


def edge_up_to(activation: str, y_max: float) -> "EdgeCurve":
    """The edge of ``activation`` on a fine 1/J grid up to ``y_max``."""
    return edge_curve(np.linspace(0.01, y_max, 400), activation=activation)


def draw_path(ax: Any, x: np.ndarray, y: np.ndarray, color: str, best: int, label: str,
               span: tuple[float, float], max_arrows: int = 5) -> None:
    """Path with arrowheads spaced evenly along its length, start ○, end ■, optimum ★.

    ``span`` is the axes' (width, height) in data units: one arrow per ~12% of the axes the path
    covers (at most ``max_arrows``; none on a path too short to show a direction).
    """
    ok = np.isfinite(x) & np.isfinite(y)
    ax.plot(x[ok], y[ok], "-", color=color, lw=1.8, path_effects=HALO, zorder=3, label=label)
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
            require_matrix(tr, layer, "The phase path")  # also TraceError for an unknown layer
        return list(layers)
    coupled = [n for n in tr.layers if has_matrix(tr, n)]
    if not coupled:
        raise TraceError(f"{tr.path} records no layer with phase coordinates (J, J0); nothing to place on the "
                         f"phase diagram.")
    same = [n for n in coupled if tr.layer_info(n).get("meanfield_activation", activation) == activation]
    return same or coupled


@styled
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
    with opened(trace) as tr:
        require_checkpoints(tr)
        activation = run_activation(tr)
        layers = _phase_layers(tr, layers, activation)
        epochs, best = tr.checkpoints, optimal_index(tr)
        coords = {}
        for layer in layers:
            x, y = phase_plane(tr.stat(layer, "J0"), tr.stat(layer, "J"))
            coords[layer] = (np.atleast_1d(x), np.atleast_1d(y))
        labels = {layer: layer_label(tr, layer) for layer in layers}
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
        draw_background(fig, ax, diagram)
    else:
        x_lim, y_lim = [-2.0, 2.0], [0.0, 2.5]
    if len(pts_x):
        pad_x, pad_y = 0.05 * (x_lim[1] - x_lim[0]), 0.05 * y_lim[1]
        x_lim = [min(x_lim[0], pts_x.min() - pad_x), max(x_lim[1], pts_x.max() + pad_x)]
        y_lim = [0.0, max(y_lim[1], pts_y.max() + pad_y)]
    draw_edge(ax, edge_up_to(activation, y_lim[1]))
    span = (x_lim[1] - x_lim[0], y_lim[1] - y_lim[0])
    for color, layer in zip(layer_colors(len(layers)), layers):
        draw_path(ax, *coords[layer], color, best, labels[layer], span, max_arrows=5 if len(layers) <= 7 else 1)
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
    handles = [handles[0]] + thin_legend(handles[1:], names[1:], len(layers))  # the edge, then the layers
    handles += [Line2D([], [], marker="o", color="0.3", mfc="white", mew=1.5, ls="", ms=7, label="start"),
                Line2D([], [], marker="s", color="0.3", ls="", ms=6, label="end"),
                Line2D([], [], marker="*", color="0.3", mec="black", ls="", ms=12,
                       label=f"optimal (min test loss), epoch {int(epochs[best])}")]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, frameon=False)
    return fig


# ------------------------------------------------------------------------------ a computed diagram


def plot_phase_diagram(
    diagram: npd.PhaseDiagram,
    path: Union[str, Path],
    *,
    edge: "EdgeCurve | Literal[False] | None" = None,
    floor: float = 1e-6,
) -> Path:
    """Write a PNG heatmap of the separation with the theoretical edge of chaos overlaid.

    x = J0/J, y = 1/J, colour = separation on a log scale (as in EOC-training's figure); for tanh the
    separation is clipped at 1 first, so the chaotic phase is one colour and the scale resolves the
    ordered side. Values below ``floor`` (ordered cells reach exactly 0) are drawn at ``floor``;
    non-finite values (diverged ReLU cells) are left blank.

    Args:
        diagram: The result of :func:`~stabilityscope.theory.numerical_phase_diagram.phase_diagram`.
        path: PNG file to write.
        edge: The theory curve (``stabilityscope.theory.meanfield.edge_curve``); None computes it on the
            diagram's 1/J range; False draws no overlay.
        floor: Lower end of the log colour scale.

    Returns:
        The path written.
    """
    sep = np.array(diagram.separation, dtype=np.float64)
    finite = np.isfinite(sep)
    top = 1.0 if diagram.activation == "tanh" else max(float(np.max(sep[finite], initial=floor)), floor * 10)
    sep = np.where(finite, np.clip(sep, floor, top), np.nan)

    fig = Figure(figsize=(6.4, 4.8), dpi=120)
    ax = fig.add_subplot()
    mesh = ax.pcolormesh(
        npd.cell_edges(diagram.j0_over_j), npd.cell_edges(diagram.inv_j), np.ma.masked_invalid(sep),
        norm=LogNorm(vmin=floor, vmax=top), cmap="viridis", shading="flat",
    )
    clip_note = ", clipped at 1" if diagram.activation == "tanh" else ""
    fig.colorbar(mesh, ax=ax, label=f"asymptotic separation ⟨‖x_t − x′_t‖⟩{clip_note}")

    if edge is None:
        edge = _theory_edge(diagram)
    if edge is not False and edge is not None:
        draw_edge(ax, edge)
        ax.legend(loc="upper right", fontsize="small", framealpha=0.8)
    ax.set_xlim(npd.cell_edges(diagram.j0_over_j)[[0, -1]])
    ax.set_ylim(npd.cell_edges(diagram.inv_j)[[0, -1]])
    ax.set_xlabel("J0 / J")
    ax.set_ylabel("1 / J")
    ax.set_title(
        f"{diagram.activation}, N = {diagram.n}, T = {diagram.steps}, seed = {diagram.seed}, "
        f"{diagram.sampling} sampling", fontsize="medium",
    )
    path = Path(path)
    fig.savefig(path)
    return path


def _theory_edge(diagram: npd.PhaseDiagram) -> "EdgeCurve":
    """The mean-field edge on a fine 1/J grid spanning the diagram."""
    y = npd.cell_edges(diagram.inv_j)
    return edge_curve(np.linspace(max(min(y[0], y[-1]), 1e-3), max(y[0], y[-1]), 400),
                      activation=diagram.activation)

