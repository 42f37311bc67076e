"""Figures drawn from a run trace (EOC-training's central plots).

- ``phase_path``: each recorded layer's path (J0/J, 1/J) over checkpoints on the phase plane, with the
  theoretical edge of chaos (AT line and the J = J_c segment) and start / end / optimal markers;
- ``coupling``: J² and J0 against epoch, with the fitted linear growth of J² and the edge J² = 1;
- ``metrics``: train and test loss and accuracy against epoch, the optimal (min test loss) epoch marked.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from stabilityscope.errors import TraceError  # noqa: E402
from stabilityscope.meanfield import critical_coupling, edge_curve  # noqa: E402
from stabilityscope.trace import Trace, open_trace  # noqa: E402

# Okabe–Ito colour-blind-safe palette.
COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")


def linear_growth_fit(epochs: np.ndarray, j2: np.ndarray, max_epoch: int = 50, edge: float = 1.0) -> tuple[float, float]:
    """Slope A and intercept of J² against epoch over the ordered part (J² < edge) of the first epochs.

    EOC-training: J² grows linearly in epochs in the ordered phase. Returns NaNs with fewer than 2 points.
    """
    keep = (epochs <= max_epoch) & (j2 < edge) & np.isfinite(j2)
    if keep.sum() < 2:
        return float("nan"), float("nan")
    slope, intercept = np.polyfit(epochs[keep], j2[keep], 1)
    return float(slope), float(intercept)


def optimal_index(trace: Trace) -> int:
    """Checkpoint index of the minimum test loss (EOC-training's optimal epoch)."""
    loss = trace.metric("test_loss")
    if not len(loss) or not np.isfinite(loss).any():
        raise TraceError(f"{trace.path} has no finite test loss to locate the optimal checkpoint.")
    return int(np.nanargmin(loss))


def _save(fig: plt.Figure, out: Path, stem: str) -> list[Path]:
    paths = [out / f"{stem}.png", out / f"{stem}.pdf"]
    for p in paths:
        fig.savefig(p, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return paths


def plot_phase_path(trace: Trace, out: Path, layers: Sequence[str] | None = None) -> list[Path]:
    layers = list(layers or trace.layers)
    epochs, best = trace.checkpoints, optimal_index(trace)
    activation = str(trace.config.get("model", {}).get("activation", "tanh"))
    fig, ax = plt.subplots(figsize=(6, 5))
    inv_j = np.linspace(0.05, 2.5, 200)
    ax.plot(*edge_curve(inv_j, activation=activation).polyline(), color="0.3", lw=1.5, label="edge of chaos (theory)")
    for color, layer in zip(COLORS, layers):
        j, j0 = trace.stat(layer, "J"), trace.stat(layer, "J0")
        with np.errstate(divide="ignore", invalid="ignore"):
            x, y = j0 / j, 1.0 / j
        tag = "" if trace.layer_info(layer).get("square") else " (surrogate)"
        ax.plot(x, y, "-", color=color, lw=1.2, label=f"{layer}{tag}")
        if len(x) > 1:  # arrows show the direction of training
            idx = np.unique(np.linspace(0, len(x) - 2, min(6, len(x) - 1)).astype(int))
            ax.quiver(x[idx], y[idx], x[idx + 1] - x[idx], y[idx + 1] - y[idx], color=color,
                      angles="xy", scale_units="xy", scale=1, width=0.006, zorder=3)
        ax.plot(x[0], y[0], "o", color=color, mfc="white", ms=7, zorder=4)
        ax.plot(x[-1], y[-1], "s", color=color, ms=6, zorder=4)
        ax.plot(x[best], y[best], "*", color=color, mec="k", ms=13, zorder=5)
    ax.plot([], [], "o", color="0.4", mfc="white", label="start")
    ax.plot([], [], "s", color="0.4", label="end")
    ax.plot([], [], "*", color="0.4", mec="k", ms=11, label=f"optimal (epoch {int(epochs[best])})")
    ax.set_xlabel(r"$J_0/J$")
    ax.set_ylabel(r"$1/J$")
    ax.set_xlim(-2, 3)
    ax.set_ylim(0, 2.5)
    ax.text(0.02, 0.97, "ordered", transform=ax.transAxes, va="top")
    ax.text(0.02, 0.03, "chaotic", transform=ax.transAxes, va="bottom")
    ax.set_title(f"Training path on the phase diagram ({activation})")
    ax.legend(loc="upper right", fontsize=8, framealpha=0.9)
    return _save(fig, out, "phase_path")


def plot_coupling(trace: Trace, out: Path, layers: Sequence[str] | None = None) -> list[Path]:
    layers = list(layers or trace.layers)
    epochs = trace.checkpoints
    activation = str(trace.config.get("model", {}).get("activation", "tanh"))
    jc2 = critical_coupling(activation) ** 2
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for color, layer in zip(COLORS, layers):
        j2 = trace.stat(layer, "J") ** 2
        a1.plot(epochs, j2, "o-", color=color, ms=3, label=layer)
        slope, icpt = linear_growth_fit(epochs, j2, edge=jc2)
        if np.isfinite(slope):
            a1.plot(epochs, icpt + slope * epochs, "--", color=color, lw=1, label=f"fit: A = {slope:.3g}/epoch")
        a2.plot(epochs, trace.stat(layer, "J0"), "o-", color=color, ms=3, label=layer)
    a1.axhline(jc2, color="0.3", ls=":", label=f"edge $J^2 = {jc2:g}$")
    a1.set_ylim(0, max(jc2 * 1.3, a1.get_ylim()[1]))
    a1.set_xlabel("epoch")
    a1.set_ylabel(r"$J^2$")
    a1.legend(fontsize=8)
    a2.axhline(0, color="0.6", lw=0.8)
    a2.set_xlabel("epoch")
    a2.set_ylabel(r"$J_0$")
    a2.legend(fontsize=8)
    fig.suptitle("Coupling strength over training")
    fig.tight_layout()
    return _save(fig, out, "coupling")


def plot_metrics(trace: Trace, out: Path) -> list[Path]:
    epochs, best = trace.checkpoints, optimal_index(trace)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, kind, label in ((a1, "loss", "cross-entropy loss"), (a2, "acc", "accuracy")):
        ax.plot(epochs, trace.metric(f"train_{kind}"), "o-", ms=3, color=COLORS[0], label="train")
        ax.plot(epochs, trace.metric(f"test_{kind}"), "o-", ms=3, color=COLORS[1], label="test")
        ax.axvline(epochs[best], color="0.3", ls=":", label=f"optimal epoch {int(epochs[best])}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    fig.suptitle("Loss and accuracy")
    fig.tight_layout()
    return _save(fig, out, "metrics")


def training_figures(trace_path: str | Path, out_dir: str | Path) -> list[Path]:
    """Draw every figure of one run into ``out_dir``; returns the PNG paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open_trace(trace_path) as tr:
        if len(tr) == 0:
            raise TraceError(f"{tr.path} holds no checkpoint yet; nothing to draw.")
        written = plot_phase_path(tr, out) + plot_coupling(tr, out) + plot_metrics(tr, out)
    return [p for p in written if p.suffix == ".png"]
