"""A stop that a signal asked for, kept until a training loop acts on it.

The app's signal handler (:mod:`stabilityscope.cli.signals`) raises
:class:`~stabilityscope.errors.Interrupted` at once, wherever the program is. Python drops an
exception raised inside a finaliser or a weak-reference callback ("Exception ignored in ..."), so the
handler also records the stop here, and the training loops call :func:`raise_if_stop_requested` once
per batch: a stop is never lost, and costs one global look-up per step when none is pending.
"""
from __future__ import annotations

from typing import Optional

from stabilityscope.errors import Interrupted

_requested: Optional[Interrupted] = None


def request_stop(signal_exception: Interrupted) -> None:
    """Record a stop (called by a signal handler)."""
    global _requested
    _requested = signal_exception


def clear_stop_request() -> None:
    """Forget a recorded stop (once it has been acted on)."""
    global _requested
    _requested = None


def raise_if_stop_requested() -> None:
    """Raise the recorded stop, if any (and forget it)."""
    global _requested
    if _requested is not None:
        exc, _requested = _requested, None
        raise exc
