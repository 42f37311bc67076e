"""Figures of a run's scalars over training: the coupling (J², J0) and the loss and accuracy.

=========================  ======================================================================
``plot_coupling``          J² and J0 against epoch, the fitted linear growth of J², the edge J² = J_c²
``plot_metrics``           train/test loss and accuracy against epoch, the optimal epoch marked
=========================  ======================================================================
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from stabilityscope.analysis.readout import (
    TraceLike,
    checkpoint_axis,
    has_matrix,
    layer_label,
    linear_growth_fit,
    opened,
    optimal_index,
    require_checkpoints,
    require_matrix,
    run_activation,
)
from stabilityscope.plots.style import (
    COLORS,
    EDGE_COLOR,
    epoch_axis,
    layer_colors,
    log_y,
    mark_optimum,
    optimum_handle,
    styled,
    thin_legend,
)
from stabilityscope.theory.meanfield import critical_coupling

__all__ = ["plot_coupling", "plot_metrics"]


@styled
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
    with opened(trace) as tr:
        require_checkpoints(tr)
        xs, x = checkpoint_axis(tr, x)
        if layers is None:
            coupled = [n for n in tr.layers if has_matrix(tr, n)]  # chains and model maps have no single J
            layers = [n for n in coupled if tr.layer_info(n).get("square")] or coupled
        layers = list(layers)
        for layer in layers:
            require_matrix(tr, layer, "The coupling figure")
        epochs, best = tr.epoch_fraction, optimal_index(tr)
        jc2 = critical_coupling(run_activation(tr)) ** 2
        series = {layer: (tr.stat(layer, "J") ** 2, tr.stat(layer, "J0"), layer_label(tr, layer)) for layer in layers}
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
        log_y(a1)
    else:
        lo, hi = a1.get_ylim()
        a1.set_ylim(0, max(hi, jc2 * 1.15))
    a2.axhline(0, color="0.6", lw=0.8)
    for ax in (a1, a2):
        mark_optimum(ax, xs[best])
        epoch_axis(ax, x)
    a1.set_ylabel(r"$J^2$  (squared coupling spread, $J = \mathrm{std}(W)\sqrt{N}$)")
    a2.set_ylabel(r"$J_0$  (mean coupling, $\mathrm{mean}(W)\,N$)")
    a1.set_title(r"$J^2$ grows linearly while ordered")
    a2.set_title(r"Mean coupling $J_0$")
    handles = thin_legend(layer_handles, [h.get_label() for h in layer_handles], len(layers))
    handles += fit_handles + [edge_handle, optimum_handle(xs[best], x)]
    fig.legend(handles=handles, loc="outside lower center", ncols=2 if fit_handles else 3, frameon=False)
    return fig


@styled
def plot_metrics(trace: TraceLike, x: Optional[str] = None) -> Figure:
    """Train and test loss (cross-entropy without the decay term) and accuracy; the optimal epoch marked.
    A regression run (trace ``loss`` mse) shows the mean squared error and R² instead (it has no accuracy).

    ``x``: the horizontal axis, ``epoch`` or ``step`` (default: the run's checkpoint unit).
    """
    with opened(trace) as tr:
        require_checkpoints(tr)
        (epochs, x), best = checkpoint_axis(tr, x), optimal_index(tr)
        score = "r2" if tr.is_regression else "acc"
        m = {name: tr.metric(name) for name in ("train_loss", "test_loss", f"train_{score}", f"test_{score}")}
    fig = Figure(figsize=(11, 4.4), layout="constrained")
    a1, a2 = fig.subplots(1, 2)
    ms = 3 if len(epochs) <= 60 else 0
    for ax, kind, scale in ((a1, "loss", 1.0), (a2, score, 100.0 if score == "acc" else 1.0)):
        ax.plot(epochs, m[f"train_{kind}"] * scale, "o-", ms=ms, color=COLORS[0], label="train")
        ax.plot(epochs, m[f"test_{kind}"] * scale, "o-", ms=ms, color=COLORS[1], label="test")
        mark_optimum(ax, epochs[best])
        ax.plot(epochs[best], m[f"test_{kind}"][best] * scale, "*", color=COLORS[1], mec="black", ms=14, zorder=5)
        epoch_axis(ax, x)
    log_y(a1)
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
        optimum_handle(epochs[best], x)]
    fig.legend(handles=handles, loc="outside lower center", ncols=4, frameon=False)
    return fig

