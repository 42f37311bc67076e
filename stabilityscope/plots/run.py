"""Every figure of one run: :func:`draw_figures` writes those a trace supports and says why the others are not drawn.

The figures, by name (:data:`FIGURES`): ``phase_path`` (:mod:`.phase`), ``coupling`` and ``metrics``
(:mod:`stabilityscope.plots.training`), ``layer_stability``, ``poincare`` and ``eigenvalues`` (:mod:`.stability`),
``geometry`` (:mod:`stabilityscope.plots.geometry`, when the trace records it: ``analysis.geometry=true``),
``explainability`` and ``complexity_matrix`` (:mod:`stabilityscope.plots.explainability`,
``analysis.explainability=true``), ``control``
(:mod:`stabilityscope.plots.control`, a run trained with ``train.control=edge``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence, Union

from matplotlib.figure import Figure

from stabilityscope.analysis.readout import TraceLike, opened, require_checkpoints
from stabilityscope.errors import TraceError
from stabilityscope.plots.control import plot_control
from stabilityscope.plots.explainability import plot_complexity_matrix, plot_explainability
from stabilityscope.plots.geometry import plot_geometry
from stabilityscope.plots.phase import BackgroundSpec, plot_phase_path
from stabilityscope.plots.stability import plot_eigenvalues, plot_layer_stability, plot_poincare
from stabilityscope.plots.style import save_figure
from stabilityscope.plots.training import plot_coupling, plot_metrics
from stabilityscope.recording.trace import Trace

__all__ = ["FIGURES", "draw_figures", "training_figures"]

FIGURES = ("phase_path", "coupling", "metrics", "layer_stability", "poincare", "eigenvalues", "geometry",
           "explainability", "complexity_matrix", "control")


def _with_baseline(tr: Trace, plot: Callable[[Trace], Figure]) -> Figure:
    """Draw ``plot`` for runs that measured SGD-complexity (the default figures of other runs stay as they were)."""
    if tr.baseline is None:
        raise TraceError(f"{tr.path} records no SGD-complexity measures (analysis.explainability=true).")
    return plot(tr)


def draw_figures(trace: TraceLike, out_dir: Union[str, Path], *,
                 background: Union[bool, BackgroundSpec] = True, cache: Optional[Union[str, Path]] = None,
                 formats: Sequence[str] = ("png", "pdf")) -> tuple[dict[str, Path], dict[str, str]]:
    """Every figure of one run into ``out_dir`` (PNG, and PDF unless ``formats`` leaves it out).

    Returns:
        (written, skipped): the PNG of each figure drawn, by name; and for each figure the trace
        cannot support (e.g. no iterated maps with ``analysis=economy``) the reason.
    """
    out = Path(out_dir)
    written: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    with opened(trace) as tr:
        require_checkpoints(tr)
        makers: dict[str, Callable[[], Figure]] = {
            "phase_path": lambda: plot_phase_path(tr, background=background, cache=cache),
            "coupling": lambda: plot_coupling(tr),
            "metrics": lambda: plot_metrics(tr),
            "layer_stability": lambda: plot_layer_stability(tr),
            "poincare": lambda: plot_poincare(tr),
            "eigenvalues": lambda: plot_eigenvalues(tr),
            "geometry": lambda: plot_geometry(tr),
            "explainability": lambda: plot_explainability(tr),
            "complexity_matrix": lambda: _with_baseline(tr, plot_complexity_matrix),
            "control": lambda: plot_control(tr),
        }
        for name in FIGURES:
            try:
                fig = makers[name]()
            except TraceError as exc:  # e.g. no iterated maps (analysis=economy), no layer with (J0, J)
                skipped[name] = str(exc)
                continue
            written[name] = save_figure(fig, out, name, ("png", *(f for f in formats if f != "png")))[0]
    return written, skipped


def training_figures(trace_path: Union[str, Path], out_dir: Union[str, Path], *,
                     background: Union[bool, BackgroundSpec] = True,
                     cache: Optional[Union[str, Path]] = None) -> list[Path]:
    """Draw every figure one run supports into ``out_dir``; returns the PNG paths."""
    written, _ = draw_figures(trace_path, out_dir, background=background, cache=cache)
    return list(written.values())
