"""The atlas's figures: a family's depth profiles, and a run's maps over training as one heat map.

Both take what :func:`stabilityscope.analysis.atlas.atlas` computed and return a matplotlib Figure.
"""
from __future__ import annotations

from typing import Mapping

import matplotlib
import numpy as np
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from stabilityscope.analysis.atlas import STAGES, AtlasRun
from stabilityscope.plots.style import COLORS, EDGE_COLOR, LOSS_COLOR, styled

__all__ = ["plot_depth_profiles", "plot_map_heatmap"]

_STAGE_STYLE = {"init": ":", "best": "-", "end": "--"}
# The heat map's colour range: s from e^-1 to e (ln s = ±1); farther from the edge the colour saturates, so the
# maps near the edge keep their contrast.
LN_S_RANGE = 1.0
_PANELS = (  # (title, y label, edge value, [(reading, colour)])
    ("J of the FC layers", "J (median in block)", None, [("J (FC, median)", COLORS[0])]),
    ("χ of the FC layers (mean field)", "χ (median in block)", 1.0, [("χ (FC, median)", COLORS[0])]),
    ("s: gains and iterated maps", "s", 1.0, [("gain (depth-wise)", COLORS[1]), ("s (iterated chain)", COLORS[2]),
                                                ("s (iterated block)", COLORS[3])]),
    ("λ_max: log-gains and iterated maps", "λ", 0.0, [("ln gain (depth-wise)", COLORS[1]),
                                                        ("λ_max (iterated chain)", COLORS[2]),
                                                        ("λ_max (iterated block)", COLORS[3])]),
)


@styled
def plot_depth_profiles(profiles: Mapping[str, Mapping[str, np.ndarray]], family: str, n_runs: int) -> Figure:
    """One family's readings per trunk block (x: block index; the head at the right end) at initialisation,
    at the best test loss and at the end, one panel each for J, χ, s and λ_max."""
    fig = Figure(figsize=(13.0, 3.4), layout="constrained")
    axes = fig.subplots(1, 4)
    for ax, (title, ylabel, edge, lines) in zip(axes, _PANELS):
        n = 0
        for reading, colour in lines:
            for stage in STAGES:
                y = profiles.get(reading, {}).get(stage)
                if y is None or not np.isfinite(y).any():
                    continue
                n = len(y)
                x = np.arange(len(y))
                ax.plot(x[:-1], y[:-1], ls=_STAGE_STYLE[stage], color=colour, marker="o", ms=3, lw=1.4)
                if np.isfinite(y[-1]):  # the head, after the trunk
                    ax.plot([x[-1]], [y[-1]], marker="s", ms=6, color=colour, mfc="none" if stage == "init" else colour,
                            ls="none")
        if edge is not None:
            ax.axhline(edge, color=EDGE_COLOR, lw=0.8, alpha=0.6)
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.set_xlabel("trunk block (square: head)")
        if n:
            ax.set_xticks(range(n))
            ax.set_xticklabels([str(i) for i in range(n - 1)] + ["head"], fontsize=7)
    handles = [Line2D([], [], color="0.3", ls=_STAGE_STYLE[s], label=s) for s in STAGES]
    handles += [Line2D([], [], color=c, label=r) for _, _, _, lines in _PANELS[2:3] for r, c in lines]
    handles.append(Line2D([], [], color=COLORS[0], label="FC layers (mean field)"))
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False)
    fig.suptitle(f"{family}: depth profiles at initialisation, best test loss and end (mean of {n_runs} run(s))")
    return fig


def _rows(run: AtlasRun) -> tuple[list[str], np.ndarray]:
    """Heat-map rows (trunk order: FC layers, chains, the block's gain and map; head last) and ln s, (R, C)
    with NaN where the map is undefined (divergent, drifting, near-identity)."""
    order = sorted(run.readings, key=lambda r: (r.block, ("fc", "fc_map", "chain", "block_gain", "block_map",
                                                          "model_map").index(r.kind)))
    names, rows = [], []
    for r in order:
        with np.errstate(all="ignore"):
            rows.append(np.where(r.defined, np.log(r.s), np.nan))
        names.append(r.name)
    return names, np.vstack(rows) if rows else np.zeros((0, len(run.epochs)))


@styled
def plot_map_heatmap(run: AtlasRun) -> Figure:
    """Every map of one run over its checkpoints, coloured by ln s (√χ for FC layers, the RMS gain for a
    block read depth-wise), grey where the iterated map is undefined; the best checkpoint marked and the
    test loss below."""
    names, z = _rows(run)
    height = min(2.0 + 0.11 * len(names), 16.0)
    fig = Figure(figsize=(9.0, height + 1.6), layout="constrained")
    ax, ax_loss = fig.subplots(2, 1, sharex=True, height_ratios=[height, 1.4])
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="0.75")
    edges = np.concatenate([[run.epochs[0] - 0.5], (run.epochs[1:] + run.epochs[:-1]) / 2, [run.epochs[-1] + 0.5]])
    mesh = ax.pcolormesh(edges, np.arange(len(names) + 1), np.ma.masked_invalid(z), cmap=cmap,
                         norm=TwoSlopeNorm(0.0, -LN_S_RANGE, LN_S_RANGE), shading="flat")
    ax.set_yticks(np.arange(len(names)) + 0.5)
    ax.set_yticklabels(names, fontsize=5 if len(names) > 40 else 7)
    ax.invert_yaxis()
    best = run.epochs[run.best]
    for a in (ax, ax_loss):
        a.axvline(best, color="k", lw=1.2, ls=":")
    fig.colorbar(mesh, ax=ax, extend="both", label="ln s  (0: the edge; grey: divergent, drifting or near-identity)")
    ax_loss.plot(run.epochs, run.test_loss, color=LOSS_COLOR, marker=".", ms=3)
    ax_loss.set_ylabel("test loss")
    ax_loss.set_xlabel("epoch")
    ax.set_title(f"{run.family}, seed {run.seed}: every map over training (best test loss at epoch {best:g})")
    return fig
