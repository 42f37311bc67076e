"""Several runs side by side (e.g. weight-decay values): their paths on the phase plane, J² and test loss.

=========================  ======================================================================
``plot_comparison``        several runs, one layer: paths, J², test loss with each run's optimum
=========================  ======================================================================
"""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from stabilityscope.analysis.collection import flatten_config, varying_config
from stabilityscope.analysis.readout import (
    TraceLike,
    has_matrix,
    optimal_index,
    require_checkpoints,
    require_matrix,
    run_activation,
)
from stabilityscope.errors import TraceError
from stabilityscope.plots.phase import (
    BackgroundSpec,
    draw_background,
    draw_edge,
    draw_path,
    edge_up_to,
    phase_background,
)
from stabilityscope.plots.style import COLORS, EDGE_COLOR, epoch_axis, log_y, styled
from stabilityscope.recording.trace import Trace, open_trace
from stabilityscope.theory import numerical_phase_diagram as npd
from stabilityscope.theory.meanfield import critical_coupling, phase_plane

__all__ = ["plot_comparison", "run_labels"]


def run_labels(traces: Sequence[Trace]) -> list[str]:
    """Short labels from the config values that differ between runs (else the run folders)."""
    configs = [flatten_config(tr.config or {}) for tr in traces]
    keys = varying_config(configs)
    if keys:
        last = [k.split(".")[-1] for k in keys]
        # the last part of a key when it says what it is (weight_decay), the whole key otherwise (analysis.name)
        short = [k if last.count(k.split(".")[-1]) > 1 or k.split(".")[-1] in ("name", "enabled", "kind")
                 else k.split(".")[-1] for k in keys]
        return [", ".join(f"{s} = {c.get(k)}" for s, k in zip(short[:3], keys[:3])) for c in configs]
    return [f"{tr.path.parent.name}" for tr in traces]


@styled
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
            require_checkpoints(tr)
        common = [n for n in opened[0].layers if all(n in tr.layers and has_matrix(tr, n) for tr in opened)]
        if layer is None:
            if not common:
                raise TraceError("The runs share no layer name to compare: "
                                 + "; ".join(f"{tr.path}: {', '.join(tr.layers)}" for tr in opened))
            square = [n for n in common if all(tr.layer_info(n).get("square") for tr in opened)]
            layer = (square or common)[0]
        for tr in opened:
            require_matrix(tr, layer, "The comparison")
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
    colors = (list(COLORS[:7]) if len(runs) <= 7
              else [matplotlib.colormaps["cividis"](v) for v in np.linspace(0, 0.9, len(runs))])
    fig = Figure(figsize=(15, 5.0), layout="constrained")
    a1, a2, a3 = fig.subplots(1, 3)
    diagram = None
    if activation and (background is True or isinstance(background, BackgroundSpec)):
        spec = background if isinstance(background, BackgroundSpec) else BackgroundSpec()
        diagram = phase_background(activation, spec, cache)
    elif activation and background not in (False, None, True):
        diagram = background
    y_top = max(2.5, max(float(np.nanmax(r["y"][np.isfinite(r["y"])], initial=0)) for r in runs) * 1.05)
    if diagram is not None:
        draw_background(fig, a1, diagram)
    edge_styles = {act: ls for act, ls in zip(sorted(acts), ("-", "--", ":"))}  # runs may differ in activation
    for act, ls in edge_styles.items():
        draw_edge(a1, edge_up_to(act, y_top), ls)
    xs = np.concatenate([r["x"][np.isfinite(r["x"])] for r in runs])
    # zoom on the paths, keeping the J = J_c segment (|J0/J| <= 1) in view
    x_lim = (min(-1.2, xs.min() - 0.3) if len(xs) else -2.0, max(1.2, xs.max() + 0.3) if len(xs) else 2.0)
    if diagram is not None:
        x_lim = tuple(npd.cell_edges(diagram.j0_over_j)[[0, -1]])
    for c, r, label in zip(colors, runs, labels):
        draw_path(a1, r["x"], r["y"], c, r["best"], label, (x_lim[1] - x_lim[0], y_top), max_arrows=2)
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
    epoch_axis(a2)
    a2.set_ylabel(r"$J^2$ (squared coupling spread)")
    a2.set_title(r"$J^2$ against epoch (★ optimal)")
    epoch_axis(a3)
    log_y(a3)
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


