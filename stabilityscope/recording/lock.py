"""One writer per run directory: an exclusive lock held while a process writes a run's trace and states.

Two processes writing one run directory (``resume=<dir>`` started twice) would rebuild the trace under
each other. :class:`RunLock` takes an exclusive ``flock`` on ``<run dir>/.lock`` and writes the
holder's process id, host and start time into it. The operating system releases the lock when the
holder exits, however it exits (even SIGKILL), so a lock whose holder is dead is simply taken over:
there is no stale-lock cleanup to get wrong.

The lock is re-entrant within a process where asked for (the app takes it before building the run,
the trainer again when it starts writing); a :class:`~stabilityscope.recording.recorder.Recorder` takes it
non-re-entrantly, so a second Recorder on an open run is refused in the same process too. It needs POSIX
``fcntl`` (Linux, macOS); elsewhere it warns once and does not lock.
"""
from __future__ import annotations

import os
import socket
import threading
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from stabilityscope.errors import RunLockedError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lock"

# run directory (resolved) → [file descriptor, depth]: the locks this process holds
_held: dict[Path, list[int]] = {}
_guard = threading.Lock()


def lock_holder(run_dir: str | Path) -> str:
    """What the lock file of ``run_dir`` says about its last holder ("" when there is none)."""
    path = Path(run_dir) / LOCK_FILE
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return ""


class RunLock:
    """``with RunLock(run_dir):`` — hold the run directory's writer lock, or raise RunLockedError."""

    def __init__(self, run_dir: str | Path, reentrant: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.reentrant = reentrant  # False: refuse even a holder in this same process (a second Recorder)
        self._key: Optional[Path] = None

    def acquire(self) -> "RunLock":
        """Take the lock (creating the run directory if needed); re-entrant within this process.

        Raises:
            RunLockedError: another living process holds it (its process id is in the message).
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        key = self.run_dir.resolve()
        with _guard:
            if key in _held:
                if not self.reentrant:
                    raise RunLockedError(f"The run directory {key} is being written by this process already (another "
                                         f"Recorder or run on it is open): close that one first.")
                _held[key][1] += 1
                self._key = key
                return self
            if fcntl is None:  # pragma: no cover - no POSIX locks on this platform
                warnings.warn("stabilityscope cannot lock run directories on this platform (no fcntl): do not "
                              "start two writers on one run.", stacklevel=2)
                _held[key] = [-1, 1]
                self._key = key
                return self
            fd = os.open(key / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                holder = lock_holder(key)
                pid = holder.split()[0] if holder else "unknown"
                raise RunLockedError(
                    f"The run directory {key} is being written by another process (pid {pid}"
                    f"{'; ' + holder.partition(' ')[2] if ' ' in holder else ''}). One run directory has one "
                    f"writer: wait for that run to end, or stop it (kill {pid}) and resume it then. A lock "
                    f"whose process has died is taken over automatically.") from None
            os.ftruncate(fd, 0)
            stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
            os.write(fd, f"{os.getpid()} host {socket.gethostname()}, since {stamp}\n".encode())
            _held[key] = [fd, 1]
            self._key = key
        return self

    def release(self) -> None:
        """Release one level of the lock; the last release unlocks the file (its content stays)."""
        if self._key is None:
            return
        with _guard:
            entry = _held.get(self._key)
            if entry is not None:
                entry[1] -= 1
                if entry[1] == 0:
                    fd = entry[0]
                    del _held[self._key]
                    if fd >= 0:
                        fcntl.flock(fd, fcntl.LOCK_UN)
                        os.close(fd)
        self._key = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
