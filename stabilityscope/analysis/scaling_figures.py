"""Deprecated alias of :mod:`stabilityscope.plots.scaling`, where this module moved; import from there."""
import warnings

from stabilityscope.plots.scaling import *  # noqa: F401,F403 (the alias re-exports the module's public names)
from stabilityscope.plots.scaling import __all__  # noqa: F401

warnings.warn("stabilityscope.analysis.scaling_figures moved to stabilityscope.plots.scaling; import from there "
              "(this deprecated alias will be removed).", DeprecationWarning, stacklevel=2)
