"""Reports: Markdown pages (with their figures and tables) of a run, a sweep, a calibration and a reproduction.

- :mod:`.run`: :func:`write_report` (one run), :func:`write_index` (several), :func:`finish_run` (the
  app's report after training); ``ss.report`` is this module under its older name;
- :mod:`.scaling`: :func:`write_scaling_report`, the scaling laws of a sweep (``task=scaling``);
- :mod:`.calibration`: :func:`write_calibration_report`, the guideline's laws measured (``task=calibrate``);
- :mod:`.reproduction`: :func:`write_reproduction`, the papers' claims with verdicts (``task=reproduce``);
- :mod:`.markdown`: the numbers, intervals and tables every report writes the same way.

Layer: above :mod:`stabilityscope.plots` (a report links the figures it draws); below :mod:`stabilityscope.cli`.
"""
from stabilityscope.reports.calibration import write_calibration_report
from stabilityscope.reports.reproduction import write_reproduction
from stabilityscope.reports.run import finish_run, write_index, write_report
from stabilityscope.reports.scaling import write_scaling_report

__all__ = ["finish_run", "write_calibration_report", "write_index", "write_report", "write_reproduction",
           "write_scaling_report"]
