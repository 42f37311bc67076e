"""Stopping on a signal: Ctrl-C and SIGTERM end a run with its checkpoints kept and a resume command.

SIGTERM is what SLURM and most schedulers send before a kill. The app turns it, like Ctrl-C, into a
KeyboardInterrupt (:class:`~stabilityscope.errors.Interrupted`) raised where the run is; the trainers
close their traces as ``interrupted`` and the app prints one line with the exact command that resumes
the run(s), then exits 130 (SIGINT) or 143 (SIGTERM).
"""
from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Any

from stabilityscope.errors import Interrupted, TraceError
from stabilityscope.interrupts import clear_stop_request, request_stop
from stabilityscope.recording.trace import open_trace


def _raise_interrupted(signum: int, frame: Any) -> None:
    exc = Interrupted(signum, signal.Signals(signum).name)
    request_stop(exc)  # in case this raise lands in a finaliser, where Python drops it
    raise exc


def stop_on_signals() -> None:
    """SIGTERM (what SLURM and most schedulers send before a kill) stops a run as Ctrl-C does.

    Both then raise a KeyboardInterrupt where the run is: the trainers close their traces as
    ``interrupted``, keeping every completed checkpoint, and :func:`interrupted_exit` says how to resume.
    """
    if threading.current_thread() is threading.main_thread():  # handlers can only be set there
        signal.signal(signal.SIGTERM, _raise_interrupted)
        signal.signal(signal.SIGINT, _raise_interrupted)
        if sys.unraisablehook is not _quiet_dropped_stop:
            global _default_unraisablehook
            _default_unraisablehook = sys.unraisablehook
            sys.unraisablehook = _quiet_dropped_stop


_default_unraisablehook = sys.unraisablehook


def _quiet_dropped_stop(unraisable: Any) -> None:
    """A stop that landed in a finaliser is not lost (the training loop raises it), so say nothing of it."""
    if isinstance(unraisable.exc_value, Interrupted):
        return
    _default_unraisablehook(unraisable)


def resume_command(run_dirs: list[Path]) -> str:
    """The exact command that continues the interrupted runs that have a checkpoint to resume from."""
    dirs = [str(d.resolve()) for d in run_dirs]
    if len(dirs) == 1:
        return f"python -m stabilityscope resume={dirs[0]}"
    return f"for d in {' '.join(dirs)}; do python -m stabilityscope resume=$d; done"


def interrupted_exit(exc: KeyboardInterrupt, run_dirs: list[Path], not_started: int = 0) -> None:
    """Print one line (what stopped, what is kept, the resume command) and exit 128 + the signal."""
    clear_stop_request()
    name, code = (exc.name, exc.exit_code) if isinstance(exc, Interrupted) else ("SIGINT", 130)
    resumable = []
    for d in run_dirs:
        try:
            with open_trace(d / "trace.h5") as tr:
                if len(tr):
                    resumable.append(d)
        except TraceError:
            pass
    kept = (f"{len(resumable)} run(s) keep every completed checkpoint; resume with: {resume_command(resumable)}"
            if resumable else "no checkpoint was completed, so there is nothing to resume")
    rest = f"; {not_started} queued run(s) never started (run them again)" if not_started else ""
    print(f"stabilityscope: interrupted by {name}: {kept}{rest}", file=sys.stderr, flush=True)
    sys.exit(code)
