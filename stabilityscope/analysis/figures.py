"""Deprecated alias of :mod:`stabilityscope.plots`, where this module moved; import from there."""
import warnings

from stabilityscope.plots import *  # noqa: F401,F403 (the alias re-exports the module's public names)
from stabilityscope.plots import __all__  # noqa: F401

warnings.warn("stabilityscope.analysis.figures moved to stabilityscope.plots; import from there "
              "(this deprecated alias will be removed).", DeprecationWarning, stacklevel=2)
