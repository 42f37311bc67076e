"""Analysis: what is read out of traces after (or while) they are written; the numbers, not their pictures.

- :mod:`.collection`: many traces as one pandas table (:func:`open_traces`);
- :mod:`.readout`: what figures and reports read out of one trace (optimal checkpoint, J² growth, ...);
- :mod:`.scaling`: EOC-training's scaling laws over a sweep;
- :mod:`.decay`: weight-decay plateaus and λ*;
- :mod:`.calibration`: the guideline's growth and plateau laws measured on runs;
- :mod:`.guideline`: :func:`recommend`, hyperparameters that reach the edge of chaos in a budget;
- :mod:`.verdicts`: an interval against a stated margin: reproduced, not reproduced, or inconclusive with the
  seeds a stated power needs (the rules every verdict of the toolkit uses);
- :mod:`.runs_table`: the settings and series the scaling and calibration fits read, as a versionable table;
- :mod:`.reproduction`: the source papers' headline claims checked on runs, one verdict each;
- :mod:`.explainability`: SGD-complexity's measures over a run;
- :mod:`.init_comparison`: Spline-FC's random vs MARS initialisation over a sweep (epochs and seconds to a target);
- :mod:`.saved_run`: a finished run's model and data, rebuilt from its run directory;
- :mod:`.stats`: the t intervals, least squares and JSON-safe numbers the analyses share.

The figures live in :mod:`stabilityscope.plots`, the reports in :mod:`stabilityscope.reports`. The
modules ``figures``, ``report``, ``scaling_figures`` and ``scaling_report`` here are deprecated aliases
of their new homes.

Layer: above :mod:`stabilityscope.training`. May use every layer below; knows nothing of the command line.
"""
from stabilityscope.analysis.collection import open_traces, varying_config
from stabilityscope.analysis.guideline import Recommendation, recommend
from stabilityscope.analysis.scaling import SweepAnalysis, analyze_sweep

__all__ = ["Recommendation", "SweepAnalysis", "analyze_sweep", "open_traces", "recommend", "varying_config"]
