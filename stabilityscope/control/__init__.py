"""Hold the edge in closed loop: a weight-decay controller, the cheap statistics it reads, and its law.

::

    import stabilityscope as ss

    ctl = ss.EdgeController(model, opt, ss.ControlConfig(statistic="chi", layers="hidden"), steps_per_epoch=1875)
    ...; opt.step(); ctl.step()  # every `every` steps: read χ, set the decay (a bounded PI step on ln λ)
    ctl.actions[-1].weight_decay, ctl.decays     # what it did

- :mod:`~stabilityscope.control.statistics`: J² and χ of FC maps from their weights, the scale-free gain of
  trunk blocks from a few random directions;
- :mod:`~stabilityscope.control.law`: the bounded PI step on ln λ;
- :mod:`~stabilityscope.control.controller`: :class:`EdgeController`, which ties them to a model and its
  optimiser's parameter groups.

The app runs it with ``train.control=edge`` (options ``control.*``); the docs' guide page "Holding the edge"
states the law, its options, the statistics' cost and their agreement with a checkpoint's measurement.

Layer: above :mod:`stabilityscope.recording`. May use the base, theory, dynamics, models and recording; the
trainers and the Lightning callback use it; knows nothing of analysis or the command line.
"""
from stabilityscope.control.controller import ControlAction, EdgeController
from stabilityscope.control.law import BoundedPI, LawSettings
from stabilityscope.control.statistics import STATISTICS, BlockGain, EdgeStatistic, WeightStatistic, edge_statistic

__all__ = ["BlockGain", "BoundedPI", "ControlAction", "EdgeController", "EdgeStatistic", "LawSettings", "STATISTICS",
           "WeightStatistic", "edge_statistic"]
