"""Deprecated alias of :mod:`stabilityscope.reports.scaling`, where this module moved; import from there."""
import warnings

from stabilityscope.reports.scaling import *  # noqa: F401,F403 (the alias re-exports the module's public names)
from stabilityscope.reports.scaling import __all__  # noqa: F401

warnings.warn("stabilityscope.analysis.scaling_report moved to stabilityscope.reports.scaling; import from there "
              "(this deprecated alias will be removed).", DeprecationWarning, stacklevel=2)
