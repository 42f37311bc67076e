"""The weight-decay controller's figure: what it read, the decay it set, and the test loss it led to.

``plot_control(trace)`` draws a run trained with ``train.control=edge`` (or a Recorder with a controller
attached): every update's statistic against its target, with the checkpoints' own full measurement of the
same quantity on top; the decay set for each parameter group; and the test loss with its best checkpoint.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from stabilityscope.analysis.readout import TraceLike, opened, optimal_index, require_checkpoints
from stabilityscope.errors import TraceError
from stabilityscope.plots.style import (
    COLORS,
    EDGE_COLOR,
    LOSS_COLOR,
    layer_colors,
    log_y,
    mark_optimum,
    optimum_handle,
    styled,
    thin_legend,
)
from stabilityscope.recording.trace import ControlLog, Trace

__all__ = ["plot_control", "checkpoint_statistic"]

LABELS = {"J2": "$J^2$", "chi": r"$\chi$", "gain": "RMS block gain"}


def checkpoint_statistic(tr: Trace, log: ControlLog, m: int) -> Optional[np.ndarray]:
    """The checkpoints' full measurement of map ``m``'s controlled statistic (C,), or None when not recorded."""
    layer = log.maps[m]
    if layer not in tr.layers:
        return None
    stats = tr.stats(layer)
    if log.statistic_name == "J2" and "J" in stats:
        return tr.stat(layer, "J").astype(float) ** 2
    if log.statistic_name == "chi" and "chi" in stats:
        return tr.stat(layer, "chi").astype(float)
    if log.statistic_name == "gain" and "gain_rms" in stats:
        return tr.stat(layer, "gain_rms").astype(float)
    return None


@styled
def plot_control(trace: TraceLike) -> Figure:
    """The controller's updates over training (see the module docstring).

    Raises:
        TraceError: the run was not controlled, or has no checkpoint.
    """
    with opened(trace) as tr:
        require_checkpoints(tr)
        log = tr.control
        if log is None:
            raise TraceError(f"{tr.path} was trained without the weight-decay controller (train.control=edge).")
        epochs, loss = tr.epoch_fraction, tr.metric("test_loss")
        best = optimal_index(tr) if np.isfinite(loss).any() else None
        measured = [checkpoint_statistic(tr, log, m) for m in range(len(log.maps))]
    fig = Figure(figsize=(14, 4.4), layout="constrained")
    a1, a2, a3 = fig.subplots(1, 3)
    colors = layer_colors(len(log.maps))
    handles = []
    for m, (name, color) in enumerate(zip(log.maps, colors)):
        handles += a1.plot(log.epoch, log.statistic[:, m], "-", color=color, lw=1.3, label=name)
        if measured[m] is not None:
            a1.plot(epochs, measured[m], "o", color=color, ms=4, mfc="none")
    targets = np.unique(np.round(log.targets, 12))
    for t in targets:
        a1.axhline(t, color=EDGE_COLOR, lw=1, ls="--")
    label = LABELS.get(log.statistic_name, log.statistic_name)
    a1.set_ylabel(f"{label} of the controlled maps")
    a1.set_title(f"{label}: every update (lines), every checkpoint (○), target (dashed)")
    positive = log.statistic[np.isfinite(log.statistic) & (log.statistic > 0)]
    if positive.size and positive.max() / positive.min() > 30:
        log_y(a1)
    law = log.law
    start = float(law.get("decay_init", np.nan))
    for g in range(log.weight_decay.shape[1]):
        x = np.concatenate([[0.0], log.epoch])
        y = np.concatenate([[start], log.weight_decay[:, g]])
        a2.step(x, y, where="post", color=COLORS[g % len(COLORS)], lw=1.4,
                label=f"group {g} ({len(log.groups[g])} map(s))")
    for bound in ("decay_min", "decay_max"):
        if bound in law:
            a2.axhline(float(law[bound]), color="0.6", lw=0.8, ls=":")
    log_y(a2)
    a2.set_ylabel("weight decay λ set (log scale; dotted: the bounds)")
    a2.set_title(f"Decay: bounded PI step on ln λ every {law.get('every', '?')} steps")
    a3.plot(epochs, loss, "o-", color=LOSS_COLOR, ms=3 if len(epochs) <= 60 else 0, label="test loss")
    if best is not None:
        a3.plot(epochs[best], loss[best], "*", color=COLORS[1], mec="black", ms=13, zorder=5)
        a3.set_title(f"Test loss; minimum {loss[best]:.4g} at epoch {epochs[best]:g}")
    a3.set_ylabel("test loss")
    for ax in (a1, a2, a3):
        ax.set_xlabel("epoch")
        if best is not None:
            mark_optimum(ax, epochs[best])
    legend = thin_legend(handles, [h.get_label() for h in handles], len(handles))
    legend += [Line2D([], [], color=EDGE_COLOR, ls="--", lw=1, label="target S*"),
               Line2D([], [], color="0.3", marker="o", mfc="none", ls="", label="checkpoint measurement")]
    if best is not None:
        legend.append(optimum_handle(epochs[best]))
    if log.weight_decay.shape[1] > 1:
        legend += a2.get_legend_handles_labels()[0]
    fig.legend(handles=legend, loc="outside lower center", ncols=min(len(legend), 5), frameon=False)
    return fig
