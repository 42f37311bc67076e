"""Analysis: what is read out of traces after (or while) they are written.

- :mod:`.collection`: many traces as one pandas table (:func:`open_traces`);
- :mod:`.figures`: the figures of a run and comparisons of runs;
- :mod:`.report`: the Markdown report of a run or of several;
- :mod:`.scaling`, :mod:`.scaling_figures`: EOC-training's scaling laws over a sweep;
- :mod:`.decay`: weight-decay plateaus and λ*;
- :mod:`.calibration`, :mod:`.calibration_report`: the guideline's growth and plateau laws measured on runs;
- :mod:`.guideline`: :func:`recommend`, hyperparameters that reach the edge of chaos in a budget;
- :mod:`.verdicts`: an interval against a stated margin: reproduced, not reproduced, or inconclusive with the
  seeds a stated power needs (the rules every verdict of the toolkit uses);
- :mod:`.runs_table`: the settings and series the scaling and calibration fits read, as a versionable table;
- :mod:`.reproduction`: the source papers' headline claims checked on runs, one verdict each;
- :mod:`.init_comparison`: Spline-FC's random vs MARS initialisation over a sweep (epochs and seconds to a target).

Layer: above :mod:`stabilityscope.training`. May use every layer below; knows nothing of the command line.
"""
from stabilityscope.analysis.collection import open_traces, varying_config
from stabilityscope.analysis.guideline import Recommendation, recommend
from stabilityscope.analysis.scaling import SweepAnalysis, analyze_sweep

__all__ = ["Recommendation", "SweepAnalysis", "analyze_sweep", "open_traces", "recommend", "varying_config"]
