"""Plots: the figures of runs, sweeps and calibrations, drawn from what :mod:`stabilityscope.analysis` reads out.

Every ``plot_*`` function returns a matplotlib :class:`~matplotlib.figure.Figure` built without pyplot
(no global state, any backend; Jupyter shows it inline); :func:`save_figure` writes one as PNG and PDF,
:func:`draw_figures` every figure one run supports. ``from stabilityscope import figures`` is this
package under its older name::

    from stabilityscope import plots

    plots.plot_phase_path(tr)                                 # the path on the phase diagram
    plots.save_figure(plots.plot_coupling(tr), "out", "coupling")   # out/coupling.png and .pdf

- :mod:`.phase`: ``plot_phase_path``, ``plot_phase_diagram``, the cached numerical background;
- :mod:`.training`: ``plot_coupling``, ``plot_metrics``;
- :mod:`.stability`: ``plot_layer_stability``, ``plot_poincare``, ``plot_eigenvalues`` (EOC-optimality);
- :mod:`.comparison`: ``plot_comparison`` of several runs;
- :mod:`.geometry`: ``plot_geometry``, ``plot_decision_regions`` (FC-geometry);
- :mod:`.explainability`: ``plot_explainability``, ``plot_complexity_matrix`` (SGD-complexity);
- :mod:`.init_comparison`: ``plot_init_comparison`` (Spline-FC);
- :mod:`.control`: ``plot_control``, the weight-decay controller's updates (``train.control=edge``);
- :mod:`.scaling`: the figures of a sweep's scaling laws; :mod:`.calibration`: the guideline's laws;
- :mod:`.run`: ``draw_figures``, every figure of one run; :mod:`.style`: the palette, the rc style,
  ``save_figure``.

Layer: above :mod:`stabilityscope.analysis` (figures draw what the analyses compute); below
:mod:`stabilityscope.reports` and :mod:`stabilityscope.cli`.
"""
from stabilityscope.analysis.readout import checkpoint_axis, geometry_layers, linear_growth_fit, optimal_index
from stabilityscope.plots.comparison import plot_comparison, run_labels
from stabilityscope.plots.control import plot_control
from stabilityscope.plots.explainability import plot_complexity_matrix, plot_explainability
from stabilityscope.plots.geometry import plot_decision_regions, plot_geometry
from stabilityscope.plots.init_comparison import plot_init_comparison
from stabilityscope.plots.phase import BackgroundSpec, cache_dir, phase_background, plot_phase_diagram, plot_phase_path
from stabilityscope.plots.run import FIGURES, draw_figures, training_figures
from stabilityscope.plots.stability import plot_eigenvalues, plot_layer_stability, plot_poincare
from stabilityscope.plots.style import COLORS, EDGE_COLOR, save_figure
from stabilityscope.plots.training import plot_coupling, plot_metrics

__all__ = [
    "COLORS", "EDGE_COLOR", "FIGURES", "BackgroundSpec", "cache_dir", "checkpoint_axis", "draw_figures",
    "geometry_layers", "linear_growth_fit", "optimal_index", "phase_background", "plot_comparison",
    "plot_complexity_matrix", "plot_control", "plot_coupling", "plot_decision_regions", "plot_eigenvalues",
    "plot_explainability",
    "plot_geometry", "plot_init_comparison", "plot_layer_stability", "plot_metrics", "plot_phase_diagram",
    "plot_phase_path", "plot_poincare", "run_labels", "save_figure", "training_figures",
]
