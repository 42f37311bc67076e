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


class FitError(StabilityscopeError, ValueError):
    """A fit found nothing to build from (e.g. MARS selected no term beyond the intercept)."""


class DivergedError(StabilityscopeError):
    """Training produced a NaN or infinite loss; the trace is kept with status 'diverged'."""

    exit_code = 3


class RunLockedError(StabilityscopeError):
    """Another living process is writing the run directory (one writer per run)."""


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal (SIGINT is Python's KeyboardInterrupt; the app turns SIGTERM into this).

    A KeyboardInterrupt, so everything that cleans up after Ctrl-C cleans up after SIGTERM too. The
    app exits with ``exit_code`` = 128 + the signal number (130 for SIGINT, 143 for SIGTERM).
    """

    def __init__(self, signum: int = 2, name: str = "SIGINT") -> None:
        super().__init__(name)
        self.signum, self.name = signum, name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
