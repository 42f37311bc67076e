"""Deprecated alias of :mod:`stabilityscope.reports.run`, where this module moved; import from there."""
import warnings

from stabilityscope.reports.run import *  # noqa: F401,F403 (the alias re-exports the module's public names)
from stabilityscope.reports.run import __all__  # noqa: F401

warnings.warn("stabilityscope.analysis.report moved to stabilityscope.reports.run; import from there "
              "(this deprecated alias will be removed).", DeprecationWarning, stacklevel=2)
