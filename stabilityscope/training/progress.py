"""Progress that talks: what a run is doing, how fast, and how long it will take on this machine.

A run reports three phases: measuring a checkpoint (evaluation on both splits, the layers' statistics,
the state file and the trace row; checkpoint 0 included), training epoch e, and training beside a
checkpoint measured in a worker thread (``train.overlap_checkpoints``). :class:`Progress` keeps the
counts and the clock, and says them:

- without a terminal (a log file, ``nohup``, a SLURM job) a line at least every ``interval`` seconds
  (30 s by default, or the ``STABILITYSCOPE_PROGRESS_INTERVAL`` environment variable): phase, steps done,
  steps per second, the epoch's and the run's remaining time;
  besides the one line per checkpoint that reports its numbers;
- with a terminal, the same numbers on the progress bar;
- once, after the first steps and the first checkpoint, the run's estimated total time on this machine,
  checkpoints included, so that a run that will take hours says so in its first minute.

The estimate is a prediction from the steps and checkpoints measured so far: training at the measured
rate, plus each remaining checkpoint at the mean measured checkpoint cost (checkpoints measured beside
training cost only what training does not hide, ``max(training between two checkpoints, checkpoint)``).

The clock is injectable (``clock=``), so the lines can be tested without waiting. A :class:`Heartbeat`
thread calls :meth:`Progress.tick` every few seconds so that a long checkpoint measured in line still
gets its lines; the training loop calls it between chunks of steps (:meth:`Progress.chunk_end`).
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from typing import Any, Callable, Iterator, Optional, Sequence

log = logging.getLogger(__name__)

# seconds between two lines without a terminal (at most; checkpoints add their own lines)
INTERVAL = float(os.environ.get("STABILITYSCOPE_PROGRESS_INTERVAL", "30"))
CHUNK_SECONDS = 5.0  # the training loop comes back to the progress about this often
ESTIMATE_AFTER = 2.0  # seconds of training (after the first chunk) before the run's total time is estimated


def duration(seconds: float) -> str:
    """A human duration: ``42 s``, ``3 min 05 s``, ``2 h 41 min``; ``?`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        m, s = divmod(int(round(seconds)), 60)
        return f"{m} min {s:02d} s"
    h, m = divmod(int(round(seconds / 60)), 60)
    return f"{h} h {m:02d} min"


class Progress:
    """The progress of one run (or of a batched group), from the training loop's own calls.

    Args:
        name: the run's name at the start of every line.
        total_steps: optimiser steps of the whole run; ``steps_per_epoch``: per epoch.
        checkpoint_steps: the global step of every checkpoint (0 and the last included).
        start_step: where training starts (a resumed run's step).
        overlap: whether checkpoints are measured beside training (a worker thread).
        terminal: whether a progress bar is shown (``bar``); without one, lines are logged.
        bar: a tqdm bar over steps, or None.
        interval: the most seconds between two lines without a terminal (default :data:`INTERVAL`).
        clock: seconds as a float (``time.monotonic``); tests pass a fake one.
        emit: where lines go (``log.info``).
    """

    def __init__(self, name: str, total_steps: int, steps_per_epoch: int, checkpoint_steps: Sequence[int],
                 start_step: int = 0, overlap: bool = False, bar: Any = None, interval: Optional[float] = None,
                 clock: Callable[[], float] = time.monotonic, emit: Optional[Callable[[str], None]] = None) -> None:
        self.name, self.total_steps, self.steps_per_epoch = name, int(total_steps), max(1, int(steps_per_epoch))
        self.epochs = math.ceil(self.total_steps / self.steps_per_epoch) if self.total_steps else 0
        self.checkpoint_steps = sorted(set(int(s) for s in checkpoint_steps) | {self.total_steps})
        self.overlap, self.bar, self.clock = overlap, bar, clock
        self.interval = float(INTERVAL if interval is None else interval)
        self.emit = emit or log.info
        self.lock = threading.RLock()
        self.step = self.first_step = int(start_step)
        now = clock()
        self.last_line = now
        self.checkpoint: Optional[tuple[str, float]] = None  # (label, started) of the checkpoint being measured
        self.checkpoint_seconds: list[float] = []
        self.trained_steps, self.trained_seconds = 0, 0.0  # after the first chunk (warm-up excluded)
        self.first_chunk: Optional[tuple[int, float]] = None
        self.chunk_start: Optional[float] = None
        self.estimated = False
        self.numbers = ""  # the last checkpoint's numbers, shown on the bar

    # -- what the loop tells ----------------------------------------------------------------
    def chunk_start_at(self, step: int) -> None:
        """Training resumes at ``step``."""
        with self.lock:
            self.step, self.chunk_start = int(step), self.clock()

    def chunk_end(self, step: int) -> None:
        """Training reached ``step``; may log a line and, once, the estimate."""
        with self.lock:
            now = self.clock()
            steps, seconds = int(step) - self.step, now - (self.chunk_start if self.chunk_start is not None else now)
            if self.first_chunk is None:
                self.first_chunk = (steps, seconds)  # warm-up (allocations, first GEMMs): kept out of the rate
            else:
                self.trained_steps += steps
                self.trained_seconds += seconds
            self.step, self.chunk_start = int(step), None
            if self.bar is not None:
                self.bar.update(steps)
            self._maybe_estimate()
            self.tick()

    def checkpoint_started(self, step: int) -> None:
        with self.lock:
            self.checkpoint = (self.checkpoint_label(step), self.clock())
            if self.bar is not None and not self.overlap:
                self.bar.set_description_str(self.checkpoint[0], refresh=True)

    def checkpoint_finished(self) -> None:
        with self.lock:
            if self.checkpoint is not None:
                self.checkpoint_seconds.append(self.clock() - self.checkpoint[1])
            self.checkpoint = None
            self._maybe_estimate()

    def checkpoint_line(self, line: str, numbers: str = "") -> None:
        """A checkpoint's own line (its numbers): logged without a terminal, and it counts as a line; with a
        terminal ``numbers`` go on the bar."""
        with self.lock:
            self.numbers = numbers
            if self.bar is None:
                self.emit(line)
            self.last_line = self.clock()

    # -- what it says -----------------------------------------------------------------------
    def checkpoint_label(self, step: int) -> str:
        if step % self.steps_per_epoch == 0:
            return f"measuring checkpoint {step // self.steps_per_epoch}"
        return f"measuring checkpoint at step {step} (epoch {step / self.steps_per_epoch:.3f})"

    @property
    def rate(self) -> float:
        """Training steps per second, measured after the first chunk (or over it when it is all there is)."""
        if self.trained_seconds > 0 and self.trained_steps > 0:
            return self.trained_steps / self.trained_seconds
        if self.first_chunk and self.first_chunk[1] > 0 and self.first_chunk[0] > 0:
            return self.first_chunk[0] / self.first_chunk[1]
        return math.nan

    @property
    def checkpoint_cost(self) -> float:
        return sum(self.checkpoint_seconds) / len(self.checkpoint_seconds) if self.checkpoint_seconds else math.nan

    def remaining(self, step: Optional[int] = None) -> float:
        """Predicted seconds from ``step`` to the end: training at :attr:`rate` plus the checkpoints after it."""
        step = self.step if step is None else step
        rate, cost = self.rate, self.checkpoint_cost
        if not math.isfinite(rate):
            return math.nan
        cost = 0.0 if not math.isfinite(cost) else cost
        ahead = [s for s in self.checkpoint_steps if s > step]
        if not self.overlap:
            return (self.total_steps - step) / rate + cost * len(ahead)
        total, previous = 0.0, step  # beside training: a checkpoint costs what the next interval does not hide
        for i, s in enumerate(ahead):
            training = (s - previous) / rate
            total += training if i == 0 else max(training, cost)
            previous = s
        return total + cost  # the last checkpoint: training only waits for it

    def epoch_remaining(self) -> float:
        end = min(self.total_steps, (self.step // self.steps_per_epoch + 1) * self.steps_per_epoch)
        return (end - self.step) / self.rate if math.isfinite(self.rate) else math.nan

    def phase(self) -> str:
        epoch = min(self.epochs, self.step // self.steps_per_epoch + 1)
        training = f"training epoch {epoch}/{self.epochs}"
        if self.checkpoint is None:
            return training
        label, started = self.checkpoint
        so_far = duration(self.clock() - started)
        return f"{training}, {label} beside it ({so_far} so far)" if self.overlap else f"{label} ({so_far} so far)"

    def status_line(self) -> str:
        done = self.step - self.first_step
        share = 100.0 * self.step / self.total_steps if self.total_steps else 100.0
        rate = self.rate
        speed = f"{rate:.3g} steps/s" if math.isfinite(rate) else "steps/s not measured yet"
        return (f"{self.name} {self.phase()}: step {self.step:,}/{self.total_steps:,} ({share:.0f}%, {done:,} this "
                f"session), {speed}; epoch ETA {duration(self.epoch_remaining())}, run ETA "
                f"{duration(self.remaining())}")

    def estimate_line(self) -> str:
        how = "beside training" if self.overlap else "in line"
        measured = self.trained_steps + (self.first_chunk or (0, 0.0))[0]
        return (f"{self.name}: estimated total time on this machine {duration(self.total_time())} "
                f"({self.total_steps:,} steps at {self.rate:.3g} steps/s and {len(self.checkpoint_steps)} checkpoints "
                f"of {duration(self.checkpoint_cost)} each, measured {how}); remaining {duration(self.remaining())}. "
                f"A prediction from the first {measured:,} steps and {len(self.checkpoint_seconds)} checkpoint(s)")

    def total_time(self) -> float:
        """The whole run's predicted seconds, checkpoint 0 included, at the measured rate and checkpoint cost."""
        rate, cost = self.rate, self.checkpoint_cost
        cost = 0.0 if not math.isfinite(cost) else cost
        steps = self.checkpoint_steps
        if not self.overlap:
            return self.total_steps / rate + cost * len(steps)
        # beside training each interval costs max(its training, the checkpoint before it); the last is waited for
        return sum(max((b - a) / rate, cost) for a, b in zip(steps, steps[1:])) + cost

    def tick(self) -> None:
        """A line (or a bar refresh) when ``interval`` seconds passed since the last one."""
        with self.lock:
            now = self.clock()
            if self.bar is not None:
                self.bar.set_description_str(self.phase(), refresh=False)
                etas = f"epoch ETA {duration(self.epoch_remaining())}, run ETA {duration(self.remaining())}"
                self.bar.set_postfix_str(f"{etas}; {self.numbers}" if self.numbers else etas, refresh=True)
                return
            if now - self.last_line >= self.interval:
                self.emit(self.status_line())
                self.last_line = now

    def _maybe_estimate(self) -> None:
        if self.estimated or not self.checkpoint_seconds or not math.isfinite(self.rate):
            return
        if self.first_chunk is None or (self.trained_seconds < ESTIMATE_AFTER and len(self.checkpoint_seconds) < 2
                                        and self.step < self.total_steps):
            return  # a few seconds of steps after the warm-up, or a second checkpoint: a rate worth stating
        self.estimated = True
        line = self.estimate_line()
        if self.bar is not None:
            self.bar.write(line)
        else:
            self.emit(line)
        self.last_line = self.clock()

    # -- how often the loop comes back ---------------------------------------------------------
    def chunk_stop(self, step: int, stop: int) -> int:
        """Where the current chunk of training ends: ``stop`` (a checkpoint or the epoch's end), or earlier so
        that the loop comes back about every :data:`CHUNK_SECONDS` (a few steps first, to measure the rate)."""
        rate = self.rate
        if self.first_chunk is None:
            chunk = 8
        elif self.trained_steps == 0:
            chunk = 16
        else:
            chunk = max(1, int(rate * min(CHUNK_SECONDS, self.interval / 2)))
        return min(stop, step + chunk)

    @contextlib.contextmanager
    def heartbeat(self, period: Optional[float] = None) -> Iterator[None]:
        """A daemon thread calling :meth:`tick` every ``period`` seconds (default: a sixth of ``interval``)
        while the block runs, so that long checkpoints measured in line get their lines too."""
        beat = Heartbeat(self, period if period is not None else max(1.0, self.interval / 6))
        beat.start()
        try:
            yield
        finally:
            beat.stop()


class Heartbeat(threading.Thread):
    """Calls ``progress.tick()`` every ``period`` seconds until stopped (touches no tensor)."""

    def __init__(self, progress: Progress, period: float) -> None:
        super().__init__(name="progress", daemon=True)
        self.progress, self.period, self.stopped = progress, period, threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.period):
            try:
                self.progress.tick()
            except Exception:  # a progress line must never stop a run
                log.debug("progress tick failed", exc_info=True)

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=5)
