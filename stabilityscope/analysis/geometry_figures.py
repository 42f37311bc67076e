"""Figures of decision-region geometry (FC-geometry, SCIENCE.md §3.3; band and gradient share: our instantiation).

=========================  ======================================================================
``plot_geometry``          per FC layer with geometry statistics: mean band half-width c_φ(δ)/‖w_k‖,
                           mean in-band fraction and the gradient share of in-band samples against
                           epoch, beside J² (the vanishing-gradient link: as J² grows the bands
                           narrow and fewer samples carry gradient)
``plot_decision_regions``  a model with 2-D input: coloured decision regions, the first layer's
                           hyperplanes w_kᵀx + b_k = 0 and their transition bands |w_kᵀx + b_k| < c_φ(δ),
                           and the data (``dataset=toy2d``)
=========================  ======================================================================

Both return a matplotlib Figure built without pyplot. :func:`load_run_model` rebuilds a run's model
from its newest saved state (``state/``), for :func:`plot_decision_regions` of a finished run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from torch import nn

from stabilityscope.analysis.figures import COLORS, _styled, geometry_layers, plot_geometry  # noqa: F401 (re-exported)
from stabilityscope.config import Config, as_options
from stabilityscope.dynamics.geometry import band_constant, band_kind, check_delta
from stabilityscope.errors import ConfigError, TraceError
from stabilityscope.models.registry import build_model
from stabilityscope.recording.trace import open_trace
from stabilityscope.training.data import dataset_info

__all__ = ["geometry_layers", "load_run_data", "load_run_model", "plot_decision_regions", "plot_geometry"]

def load_run_model(run_dir: Union[str, Path], epoch: Optional[int] = None) -> tuple[nn.Module, Config]:
    """A run's model with the weights of its newest saved state (or of ``epoch``), and its config."""
    run_dir = Path(run_dir)
    if run_dir.suffix == ".h5":
        run_dir = run_dir.parent
    with open_trace(run_dir / "trace.h5") as tr:
        cfg = as_options(tr.config, Config)
    states = sorted((run_dir / "state").glob("epoch_*.pt"))
    if epoch is not None:
        states = [p for p in states if int(p.stem.split("_")[1]) == epoch]
    if not states:
        raise TraceError(f"{run_dir} has no saved state" + (f" for epoch {epoch}" if epoch is not None else "") +
                         f"; states kept: {', '.join(p.stem for p in sorted((run_dir / 'state').glob('*.pt'))) or 'none'}.")
    input_shape, classes = dataset_info(cfg.dataset.name, cfg.dataset.binarize)
    model = build_model(cfg.model, input_shape, classes)
    model.load_state_dict(torch.load(states[-1], map_location="cpu", weights_only=True)["model"])
    return model.eval(), cfg


def load_run_data(run_dir: Union[str, Path]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_test, y_test) of a run's dataset, as its config loads it (subsets included)."""
    from stabilityscope.training.data import load_dataset

    run_dir = Path(run_dir)
    with open_trace(run_dir if run_dir.suffix == ".h5" else run_dir / "trace.h5") as tr:
        d = as_options(tr.config, Config).dataset
    data = load_dataset(d.name, d.root, train_subset=d.train_subset, test_subset=d.test_subset, normalize=d.normalize,
                        binarize=d.binarize)
    return data.x_train, data.y_train, data.x_test, data.y_test


def _first_linear(model: nn.Module, layer: Optional[str]) -> tuple[str, nn.Linear, str]:
    modules = list(model.named_modules())
    if layer is not None:
        mods = dict(modules)
        if layer not in mods or not isinstance(mods[layer], nn.Linear):
            raise ConfigError(f"layer={layer!r} is not an nn.Linear of the model; its Linear layers: "
                              f"{', '.join(n for n, m in modules if isinstance(m, nn.Linear))}.")
        idx = [n for n, _ in modules].index(layer)
    else:
        idx = next((i for i, (_, m) in enumerate(modules) if isinstance(m, nn.Linear)), None)
        if idx is None:
            raise ConfigError("plot_decision_regions needs a model whose first layer is an nn.Linear.")
    name, lin = modules[idx]
    nxt = modules[idx + 1][1] if idx + 1 < len(modules) else None
    act = type(nxt).__name__.lower() if nxt is not None else ""
    return name, lin, act


@_styled
def plot_decision_regions(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, layer: Optional[str] = None,
                          delta: float = 0.1, resolution: int = 300, margin: float = 0.15,
                          title: Optional[str] = None) -> Figure:
    """Decision regions of a 2-D-input classifier with its first layer's hyperplanes and transition bands.

    Args:
        model: a classifier taking (B, 2) inputs (e.g. ``model=toy_mlp``).
        x, y: the points (n, 2) and labels (n,) to draw.
        layer: the nn.Linear whose hyperplanes are drawn (default: the first); its input must be the 2-D input.
        delta: band threshold δ ∈ (0, ½) (band: |w_kᵀx + b_k| < c_φ(δ), our instantiation).
        resolution: grid points per axis for the regions.
        margin: extra room around the data, as a fraction of its range.
        title: the figure title (default: what is drawn).
    """
    check_delta(delta)
    x, y = x.detach().cpu().float(), y.detach().cpu()
    if x.dim() != 2 or x.shape[1] != 2:
        raise ConfigError(f"plot_decision_regions draws models with 2-D input; got inputs of shape {tuple(x.shape)}.")
    name, lin, act = _first_linear(model, layer)
    if lin.in_features != 2:
        raise ConfigError(f"plot_decision_regions: layer {name!r} takes {lin.in_features} inputs, not the 2-D input.")
    lo, hi = x.min(0).values.numpy(), x.max(0).values.numpy()
    pad = margin * (hi - lo)
    lo, hi = lo - pad, hi + pad
    gx, gy = np.linspace(lo[0], hi[0], resolution), np.linspace(lo[1], hi[1], resolution)
    grid = torch.from_numpy(np.stack(np.meshgrid(gx, gy), -1).reshape(-1, 2)).float()
    p = next(model.parameters())
    was_training = model.training
    model.eval()
    with torch.no_grad():
        logits = model(grid.to(p.device, p.dtype)).float().cpu()
    model.train(was_training)
    classes = max(int(logits.shape[1]), int(y.max()) + 1)
    pred = logits.argmax(1).reshape(resolution, resolution).numpy()
    W = lin.weight.detach().cpu().double().numpy()
    b = lin.bias.detach().cpu().double().numpy() if lin.bias is not None else np.zeros(len(W))
    c = band_constant(act, delta) if band_kind(act) == "saturating" else float("nan")
    fig = Figure(figsize=(6.8, 6.4), layout="constrained")
    ax = fig.subplots()
    palette = [COLORS[i % len(COLORS)] for i in range(classes)]
    ax.contourf(gx, gy, pred, levels=np.arange(classes + 1) - 0.5, cmap=ListedColormap(palette), alpha=0.18)
    ax.contour(gx, gy, pred, levels=np.arange(classes) + 0.5, colors="0.25", linewidths=1.2)
    X0, X1 = np.meshgrid(gx, gy)
    Z = W[:, 0, None, None] * X0 + W[:, 1, None, None] * X1 + b[:, None, None]  # (H, R, R)
    for k in range(len(W)):  # one contour per unit: a handful of hyperplanes, not a data loop
        ax.contour(gx, gy, Z[k], levels=[0.0], colors=COLORS[6], linewidths=0.9)
        if np.isfinite(c):
            ax.contourf(gx, gy, np.abs(Z[k]), levels=[0.0, c], colors=[COLORS[5]], alpha=0.05)
    ax.scatter(x[:, 0], x[:, 1], c=[palette[int(t)] for t in y], s=6, lw=0, alpha=0.8)
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_aspect("equal")
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    handles = [Line2D([], [], color="0.25", lw=1.2, label="decision boundary"),
               Line2D([], [], color=COLORS[6], lw=0.9, label=f"hyperplanes of {name!r} ($w_k^T x + b_k = 0$)")]
    if np.isfinite(c):
        handles.append(Patch(color=COLORS[5], alpha=0.3, label=f"transition bands ({act}, δ = {delta:g}; ours)"))
    else:
        handles.append(Patch(color="white", label=f"{act or 'no activation'}: no saturation, no band"))
    ax.legend(handles=handles, loc="upper right", fontsize=8, framealpha=0.9)
    ax.set_title(title or f"Decision regions, {len(W)} hyperplanes of the first layer")
    return fig
