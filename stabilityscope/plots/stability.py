"""Figures of the iterated layer maps (EOC-optimality): stability over training, return maps, eigenvalues.

=========================  ======================================================================
``plot_layer_stability``   per square layer: s (M1), λ_max and the asymptotic distance (M4) against
                           epoch, test loss on a twin axis, the edge drawn (EOC-optimality)
``plot_poincare``          Poincaré return maps (M5) at chosen checkpoints, one panel each
``plot_eigenvalues``       a square layer's eigenvalues in the complex plane with the unit circle
=========================  ======================================================================

A figure that needs statistics the trace lacks raises :class:`~stabilityscope.errors.TraceError`
naming them and the option that records them (``analysis=economy`` records no iterated maps and no
eigenvalues; only square layers have them).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from stabilityscope.analysis.readout import (
    EIGEN_OPTION,
    MAPS_OPTION,
    TraceLike,
    checkpoint_axis,
    checkpoint_indices,
    layers_with,
    opened,
    optimal_index,
    require_checkpoints,
)
from stabilityscope.plots.style import (
    COLORS,
    EDGE_COLOR,
    LOSS_COLOR,
    epoch_axis,
    log_y,
    mark_optimum,
    optimum_handle,
    styled,
)
from stabilityscope.recording.trace import Trace

__all__ = ["MAP_PANELS", "MAX_STABILITY_ROWS", "plot_eigenvalues", "plot_layer_stability", "plot_poincare"]

MAX_STABILITY_ROWS = 6  # plot_layer_stability draws this many records unless told which


def _snapshot_panels(tr: Trace, stat: str, what: str, option: str, layer: Optional[str],
                     epochs: Optional[Sequence[int]]) -> tuple[str, list[int], np.ndarray, int]:
    """What a one-panel-per-checkpoint figure of a square layer's ``stat`` needs: the layer (checked,
    default the first with ``stat``), the panels' checkpoint indices, all checkpoint epochs and the
    optimal checkpoint's index."""
    require_checkpoints(tr)
    chosen = layers_with(tr, [stat], what, option, None if layer is None else [layer])[0]
    return chosen, checkpoint_indices(tr, epochs), tr.checkpoints, optimal_index(tr)


def _grid(n_panels: int, max_cols: int = 4) -> tuple[int, int]:
    cols = min(n_panels, max_cols)
    return math.ceil(n_panels / cols), cols


MAP_PANELS = (  # stat, panel title, y label, edge value
    ("s_mean", "asymptotic Jacobian norm (M1)", r"$s = \|\partial F(x_T)\|_F / \sqrt{N}$", 1.0),
    ("lambda_max", "largest Lyapunov exponent (Benettin)", r"$\lambda_{\max}$  (1/step)", 0.0),
    ("asymptotic_distance", "asymptotic distance of two orbits (M4)", r"$D_\infty$", 0.0),
)


@styled
def plot_layer_stability(trace: TraceLike, layers: Optional[Sequence[str]] = None, x: Optional[str] = None) -> Figure:
    """Per square layer (one row each): s (mean ± std over start states), λ_max (Benettin) and the
    asymptotic distance against epoch, test loss on a twin axis, the edge drawn (EOC-optimality).

    Raises:
        TraceError: no requested layer is square or the maps were not recorded (analysis=economy).
    """
    stats = [p[0] for p in MAP_PANELS] + ["s_std"]
    with opened(trace) as tr:
        require_checkpoints(tr)
        chosen = layers is not None
        layers = layers_with(tr, stats, "The layer-stability figure", MAPS_OPTION, layers)
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
            mark_optimum(ax, epochs[best])
            epoch_axis(ax, x)
            ax.set_ylabel(ylabel + (rf"  ($\times 10^{{{e}}}$)" if e else ""), color=COLORS[0])
            ax.set_title(f"{layer}: {title}")
            twin = ax.twinx()
            twin.plot(epochs, loss, "--", color=LOSS_COLOR, lw=1.3, label="test loss")
            log_y(twin)
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
               optimum_handle(epochs[best], x)]
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


@styled
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
    with opened(trace) as tr:
        layer, idx, ck, best = _snapshot_panels(tr, "poincare", "The Poincaré return map", MAPS_OPTION, layer, epochs)
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


@styled
def plot_eigenvalues(trace: TraceLike, layer: Optional[str] = None, epochs: Optional[Sequence[int]] = None) -> Figure:
    """Eigenvalues of a square layer's weight matrix in the complex plane, one panel per checkpoint,
    with the unit circle and the circular-law radius J of a random matrix with the same spread.

    Args:
        trace: an open trace or its path.
        layer: a square layer with eigenvalues; default: the first one.
        epochs: checkpoints to show; default: start, optimal and last.
    """
    with opened(trace) as tr:
        layer, idx, ck, best = _snapshot_panels(tr, "eigenvalues", "The eigenvalue figure", EIGEN_OPTION, layer, epochs)
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

