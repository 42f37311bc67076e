"""Exceptions with messages meant for the person at the command line.

The Hydra app turns any :class:`StabilityscopeError` into one paragraph on stderr and a non-zero
exit code (no traceback); library users can catch them by class.
"""
from __future__ import annotations


class StabilityscopeError(Exception):
    """Base class: a problem with the user's input or environment, not a bug."""

    exit_code = 2


class ConfigError(StabilityscopeError, ValueError):
    """A configuration value is out of its allowed range or inconsistent."""


class DataError(StabilityscopeError, FileNotFoundError):
    """A dataset is missing or malformed."""


class TraceError(StabilityscopeError):
    """A trace file is missing, unreadable, or lacks what was asked for."""


class DivergedError(StabilityscopeError):
    """Training produced a NaN or infinite loss; the trace is kept with status 'diverged'."""

    exit_code = 3
