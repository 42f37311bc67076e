"""Figures of decision-region geometry (FC-geometry, docs/science/secondary.md; band and gradient share:
our instantiation).

=========================  ======================================================================
``plot_geometry``          per FC layer with geometry statistics: mean band half-width c_φ(δ)/‖w_k‖,
                           mean in-band fraction and the gradient share of in-band samples against
                           epoch, beside J² (the vanishing-gradient link: as J² grows the bands
                           narrow and fewer samples carry gradient)
``plot_decision_regions``  a model with 2-D input: coloured decision regions, the first layer's
                           hyperplanes w_kᵀx + b_k = 0 and their transition bands |w_kᵀx + b_k| < c_φ(δ),
                           and the data (``dataset=toy2d``)
=========================  ======================================================================

Both return a matplotlib Figure built without pyplot. A finished run's model and data for
:func:`plot_decision_regions` come from :func:`load_run_model` and :func:`load_run_data`
(:mod:`stabilityscope.analysis.saved_run`, re-exported here).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from torch import nn

from stabilityscope.analysis.readout import (
    TraceLike,
    geometry_layers,
    layer_label,
    opened,
    optimal_index,
    require_checkpoints,
)
from stabilityscope.analysis.saved_run import load_run_data, load_run_model
from stabilityscope.dynamics.geometry import GEOMETRY_STATS, band_constant, band_kind, check_delta
from stabilityscope.errors import ConfigError, TraceError
from stabilityscope.plots.style import (
    COLORS,
    EDGE_COLOR,
    epoch_axis,
    layer_colors,
    mark_optimum,
    optimum_handle,
    styled,
)
from stabilityscope.recording.trace import config_section

# geometry_layers, load_run_model and load_run_data are re-exported: the inputs these figures take
__all__ = ["OUR_INSTANTIATION", "geometry_layers", "load_run_data", "load_run_model", "plot_decision_regions",
           "plot_geometry"]

OUR_INSTANTIATION = "our instantiation of FC-geometry (van den Berg, arXiv:1605.00329)"


@styled
def plot_geometry(trace: TraceLike, layers: Optional[Sequence[str]] = None) -> Figure:
    """Band half-width, in-band fraction and gradient share of in-band samples against epoch, beside J².

    Args:
        trace: an open trace or its path (recorded with ``analysis.geometry=true``).
        layers: default: every layer with a band (or, for ReLU-like units, an active set).
    """
    with opened(trace) as tr:
        require_checkpoints(tr)
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
        data = {n: {s: tr.stat(n, s) for s in (*GEOMETRY_STATS, "J")}
                | {"label": layer_label(tr, n), "act": str(tr.layer_info(n).get("activation", ""))}
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
        mark_optimum(ax, epochs[best])
        epoch_axis(ax)
    fig.suptitle(f"Decision-region geometry on {n_samples} fixed training inputs ({OUR_INSTANTIATION})", fontsize=10.5)
    fig.legend(handles=handles + [optimum_handle(int(epochs[best]))], loc="outside lower center",
               ncols=min(4, len(handles) + 1), frameon=False)
    return fig


# ------------------------------------------------------------------------------ all figures of a run


# ------------------------------------------------------------------------------ SGD-complexity


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


@styled
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
