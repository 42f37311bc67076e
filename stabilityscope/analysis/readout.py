"""What figures and reports read out of one trace: its optimal checkpoint, its activation, the linear
growth of J², the checkpoint axis, and which layers carry which statistics.

These are computations on a :class:`~stabilityscope.recording.trace.Trace` (no drawing): the figures of
:mod:`stabilityscope.plots` and the reports of :mod:`stabilityscope.reports` share them. A function that
needs statistics the trace lacks raises :class:`~stabilityscope.errors.TraceError` naming them and the
option that records them (``analysis=economy`` records no iterated maps and no eigenvalues; only square
layers have them).
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import numpy as np

from stabilityscope.dynamics.geometry import GEOMETRY_STATS
from stabilityscope.errors import TraceError
from stabilityscope.recording.trace import Trace, config_section, open_trace

__all__ = ["EIGEN_OPTION", "MAPS_OPTION", "MAP_KINDS", "TraceLike", "checkpoint_axis", "checkpoint_indices",
           "geometry_layers", "has_matrix", "is_map", "layer_label", "layers_with", "linear_growth_fit", "opened",
           "optimal_index", "require_checkpoints", "require_matrix", "require_stats", "run_activation"]

TraceLike = Union[Trace, str, Path]
MAP_KINDS = ("chain", "model_map")  # records iterated as a module: no single weight matrix, no (J0, J)
MAPS_OPTION = "analysis=standard (or analysis.maps=true)"
EIGEN_OPTION = "analysis=standard (or analysis.eigen=true)"


@contextmanager
def opened(trace: TraceLike) -> Iterator[Trace]:
    """An open Trace: the one given, or one opened (and closed again) from a path."""
    if isinstance(trace, Trace):
        yield trace
    else:
        with open_trace(trace) as tr:
            yield tr


def linear_growth_fit(epochs: np.ndarray, j2: np.ndarray, max_epoch: int = 50,
                      edge: float = 1.0) -> tuple[float, float]:
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



def require_checkpoints(tr: Trace, n: int = 1) -> None:
    """TraceError unless the trace holds at least ``n`` checkpoints."""
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


def is_map(tr: Trace, layer: str) -> bool:
    """A record iterated as a whole module (a chain or a model map): no single weight matrix."""
    return str(tr.layer_info(layer).get("kind", "")) in MAP_KINDS


def has_matrix(tr: Trace, layer: str) -> bool:
    """A record with phase coordinates (every FC layer; not chains or model maps)."""
    stats = tr.stats(layer)
    return "J" in stats and "J0" in stats


def require_matrix(tr: Trace, layer: str, what: str) -> None:
    """TraceError unless ``layer`` has phase coordinates; ``what`` names the figure that needs them."""
    if not has_matrix(tr, layer):
        raise TraceError(f"{what} needs phase coordinates (J, J0), and {layer!r} of {tr.path} is a "
                         f"{tr.layer_info(layer).get('kind', 'record')} iterated as a whole module: it has no single "
                         f"weight matrix. Layers with coordinates: "
                         f"{', '.join(n for n in tr.layers if has_matrix(tr, n)) or 'none'}.")


def require_stats(tr: Trace, layer: str, names: Sequence[str], what: str, option: str) -> None:
    """TraceError naming the missing statistics of ``layer`` and how to record them."""
    info = tr.layer_info(layer)
    if is_map(tr, layer) and "eigenvalues" in names:
        require_matrix(tr, layer, what)
    if not info.get("square") and not is_map(tr, layer):
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



def layers_with(tr: Trace, names: Sequence[str], what: str, option: str, layers: Optional[Sequence[str]]) -> list[str]:
    """The requested layers (each checked), or every square layer that records ``names``."""
    if layers is not None:
        for layer in layers:
            require_stats(tr, layer, names, what, option)
        return list(layers)
    found = [layer for layer in tr.layers if (tr.layer_info(layer).get("square") or is_map(tr, layer))
             and all(n in tr.stats(layer) for n in names)]
    if found:
        return found
    square = [layer for layer in tr.layers if tr.layer_info(layer).get("square")]
    if square:  # the informative message: what is missing and how to record it
        require_stats(tr, square[0], names, what, option)
    shapes = ", ".join(f"{n} ({tr.layer_info(n).get('fan_in')} → {tr.layer_info(n).get('fan_out')})" for n in tr.layers)
    raise TraceError(f"{what} needs a square layer with {', '.join(names)}, and no layer of {tr.path} is square "
                     f"({shapes}): a single non-square layer has no iterated map or eigenvalues.")


def checkpoint_indices(tr: Trace, epochs: Optional[Sequence[int]]) -> list[int]:
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


def layer_label(tr: Trace, layer: str) -> str:
    """The layer's name, marked as its mean-field surrogate when the layer is not square."""
    return layer if tr.layer_info(layer).get("square") else f"{layer} (mean-field surrogate)"


def checkpoint_axis(tr: Trace, x: Optional[str] = None) -> tuple[np.ndarray, str]:
    """(x values of the checkpoints, axis): ``x`` = ``epoch`` (fractional epochs) or ``step``; None picks
    ``step`` for runs scheduled in steps (train.checkpoints.unit=step), else ``epoch``."""
    x = x or ("step" if tr.step_schedule else "epoch")
    return tr.position(x), x


def geometry_layers(tr: Trace) -> list[str]:
    """The layers of a trace that record the geometry statistics and have a transition band or active set."""
    return [n for n in tr.layers if all(s in tr.stats(n) for s in GEOMETRY_STATS)
            and np.isfinite(tr.stat(n, "in_band_fraction")).any()]

