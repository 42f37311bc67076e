"""Train K configurations of the canonical network at once: stacked weights, batched matmuls.

EOC-training's results are relations across many runs of one small network (docs/science/mean-field.md). One
run of 784-784-10 at batch 32 keeps two CPU cores busy only a quarter of the time (each step is a
few small matmuls plus per-op overhead), so K runs that differ only in learning rate, momentum,
weight decay and seed are trained here as one network with a leading member axis:

    hidden  W1: (K, H, D)    head  W2: (K, C, H), b2: (K, 1, C)    a batch  x: (K, B, D)

Each member draws its own permutation from its own seeded generator, is initialised exactly as
:class:`~stabilityscope.training.trainer.Run` initialises it (``torch.manual_seed(seed)`` before building),
and follows PyTorch's SGD update (``d = g + wd·w``, ``buf = α·buf + d``, ``w -= η·buf``; weight decay
on matrices only). The gradients are written by hand (softmax cross-entropy through one tanh/ReLU
layer), which lets the hidden-weight gradient accumulate straight into the momentum buffer
(``baddbmm_``): at K = 32 the three K×2.4 MB stacks are touched a minimum number of times per step.

Every member is a full :class:`Run` (its own tracker, state files and trace): at a checkpoint the
member's slice is copied into its model and optimiser and the ordinary checkpoint code runs, so a
member's ``trace.h5`` and ``state/`` are exactly what a single run writes, and any member resumes on
its own with ``resume=<run dir>``. Resumed runs batch too (a killed sweep continues as the group it was,
``python -m stabilityscope -m resume=<dir>,<dir>,...``): each member restores its own state as a single
resume does, and members that continue from the same epoch end train as one stack.

Members may have different epoch counts and checkpoint schedules, in epochs or in steps (they leave the
stack when done; a member closed inside an epoch keeps its row until the epoch ends, unrecorded); with
``analysis.explainability`` the group fits the linear baseline L once and every member is scored against
it; a member that diverges or fails is closed with that status and dropped while the others continue. A
member's ``wall_time`` is the group's, since the group started (a resumed member adds its time before).
"""
from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
from tqdm.auto import tqdm

from stabilityscope.config import Config, as_options, value_of
from stabilityscope.errors import ConfigError, DivergedError
from stabilityscope.interrupts import raise_if_stop_requested
from stabilityscope.recording.lock import RunLock
from stabilityscope.recording.trace import TraceWriter
from stabilityscope.training.baseline import LinearBaseline
from stabilityscope.training.data import InMemoryData, load_dataset, positive_classes
from stabilityscope.training.progress import Progress
from stabilityscope.training.stacked import StackedCanonical, stacked_step_obstacle
from stabilityscope.training.trainer import Run, RunState, resolve_device, resume_step, run_baseline

log = logging.getLogger(__name__)


def batching_obstacle(cfg: Config) -> Optional[str]:
    """Why ``cfg`` cannot join a batched group, or None when it can.

    Batched: a ``task=train`` run (fresh, or resumed with its stored config) of the built-in ``fmnist_fc``
    trained by SGD without augmentation (the stacked update is SGD's; augmentation draws from the shuffle
    generator) and on the whole training set (a subsample differs between members).
    """
    checks = (
        (value_of(cfg.task) == "train", f"task={value_of(cfg.task)}"),
        (not cfg.analysis.describe, "analysis=describe"),
        (value_of(cfg.dataset.subsample) == "none", f"dataset.subsample={value_of(cfg.dataset.subsample)}"),
        (value_of(cfg.train.control) == "none", "train.control=edge (each run sets its own decay)"),
        (not cfg.dataset.validation, "dataset.validation (a held-out split, evaluated per run)"),
    )
    for ok, reason in checks:
        if not ok:
            return reason
    return stacked_step_obstacle(cfg)


def group_key(cfg: Config) -> tuple:
    """Runs with equal keys can share one stack: same data, network shape, batch size and device, and the
    same starting step (0 for a fresh run, a resumed run's :func:`resume_step`)."""
    d, m = cfg.dataset, cfg.model
    start = resume_step(Path(cfg.resume), cfg.train.checkpoints.unit) if cfg.resume is not None else 0
    return (d.name, str(d.root), d.train_subset, d.test_subset, bool(d.normalize), positive_classes(d.name, d.binarize),
            m.width, value_of(m.activation), int(cfg.train.batch_size), str(cfg.train.device), cfg.train.threads,
            start)


@dataclass
class Member:
    """One run of a group: the :class:`Run`, its open trace, its progress and its global RNG state."""

    run: Run
    writer: Optional[TraceWriter]  # opened when the group starts
    state: RunState
    torch_rng: torch.Tensor  # the global RNG as the run's own process would have it (saved with the state)
    numbers: Optional[dict[str, float]] = None  # its last checkpoint's progress numbers (test loss, J, ...)

    @property
    def epochs(self) -> int:
        return int(self.run.cfg.train.epochs)


def last_epoch(members: Sequence[Member]) -> int:
    """The last epoch any member of a group trains to."""
    return max((m.epochs for m in members), default=0)


class BatchedRuns:
    """Train a group of canonical-network runs (equal :func:`group_key`) as one stacked network."""

    def __init__(self, cfgs: Sequence[Config], run_dirs: Sequence[Path],
                 data: Optional[InMemoryData] = None) -> None:
        cfgs = [as_options(c, Config) for c in cfgs]
        if not cfgs or len(cfgs) != len(run_dirs):
            raise ValueError(f"BatchedRuns needs one run directory per config; got {len(cfgs)} configs "
                             f"and {len(run_dirs)} directories.")
        for cfg in cfgs:
            reason = batching_obstacle(cfg)
            if reason is not None:
                raise ConfigError(f"This run cannot be trained in a batched group ({reason}); batched groups "
                                  f"take fresh SGD runs of model=fmnist_fc without augmentation.")
        keys = {group_key(c) for c in cfgs}
        if len(keys) != 1:
            raise ConfigError("A batched group needs one dataset, network shape, batch size and device, and one "
                              "starting step (fresh runs, or resumed runs that continue from the same checkpoint); "
                              f"got {len(keys)} different combinations.")
        first = cfgs[0]
        self.device = resolve_device(str(first.train.device))
        d = first.dataset
        data = data or load_dataset(d.name, d.root, download=d.download, train_subset=d.train_subset,
                                    test_subset=d.test_subset, normalize=d.normalize, binarize=d.binarize)
        self.data = data.to(self.device)
        self.members: list[Member] = []
        baselines: dict[tuple, LinearBaseline] = {}  # analysis.explainability: one fit of L per set of fit options
        for cfg, rd in zip(cfgs, run_dirs):
            baseline, a = None, cfg.analysis
            if a.explainability:
                fit_key = (a.baseline_l2, a.baseline_tol, a.baseline_max_iter)
                if fit_key not in baselines:
                    baselines[fit_key] = run_baseline(self.data, Path(rd), a)
                baseline = baselines[fit_key]
            run = Run(cfg, Path(rd), data=self.data, baseline=baseline)  # seeds the global RNG, builds the model
            # what is left is the RNG a single run carries through training (saved with each state)
            self.members.append(Member(run, None, RunState(0, 0, 0.0), torch.get_rng_state()))
        self.batch_size = int(first.train.batch_size)

    # -- the loop ----------------------------------------------------------------------------
    def _finish(self, m: Member, status: str, error: Optional[str] = None) -> None:
        m.run.recorder.close(status, error=error)
        self.statuses[m.run.run_dir] = status
        if error:
            log.error("%s %s: %s", m.run.run_dir, status, error)

    def _checkpoint(self, m: Member, i: int, perm: Optional[torch.Tensor] = None) -> bool:
        """Checkpoint member ``m`` (stack index ``i``); False when it diverged or failed (and is closed).

        ``perm``: the member's permutation of the current epoch, for a checkpoint inside an epoch.
        """
        try:
            self.stack.write_member(i, m.run.model, m.run.opt, m.state.step)
            torch.set_rng_state(m.torch_rng)
            m.numbers = m.run.checkpoint(m.state, perm=perm)
            m.torch_rng = torch.get_rng_state()
            return True
        except DivergedError as exc:
            self._finish(m, "diverged", str(exc))
        except Exception as exc:  # one member's failure (a full disk, a bad analysis option) ends only it
            log.exception("Checkpoint %d of %s failed", m.state.epoch, m.run.run_dir)
            self._finish(m, "failed", f"{type(exc).__name__}: {exc}")
        return False

    def execute(self) -> dict[Path, str]:
        """Train every member to its ``train.epochs``; returns each run directory's final status.

        Every member's run directory is locked while the group trains (RunLockedError if another process
        writes one). Ctrl-C (or SIGTERM in the app) marks every open member ``interrupted`` and goes on
        to the caller.
        """
        with contextlib.ExitStack() as locks:
            for m in self.members:
                locks.enter_context(RunLock(m.run.run_dir))
            return self._execute()

    def _open(self) -> None:
        """Create each fresh member's trace; restore each resumed member (weights, momentum, generators,
        tracker; its trace reopened after the checkpoint it continues from), as a single resume does."""
        steps_per_epoch = math.ceil(len(self.data.x_train) / self.batch_size)
        for m in self.members:
            m.run.run_dir.mkdir(parents=True, exist_ok=True)
            if m.run.cfg.resume is None:
                m.writer = m.run.new_writer(batch_group=len(self.members))
                continue
            m.state = m.run.restore()
            m.writer = m.run.recorder.writer
            m.run.last_checkpoint = m.state.epoch
            m.torch_rng = torch.get_rng_state()
            log.info("Resuming %s after epoch %d in a batched group", m.run.run_dir, m.state.epoch)
        starts = sorted({m.state.step for m in self.members})
        if len(starts) > 1 or starts[0] % steps_per_epoch:
            for m in self.members:  # nothing trained yet: each trace stays as it was, resumable on its own
                self._finish(m, "interrupted", "not resumed: its batched group could not continue together")
            raise ConfigError(f"The runs of a batched group must continue from one epoch's end; these continue "
                              f"from steps {', '.join(map(str, starts))} ({steps_per_epoch} steps per epoch). "
                              f"Resume them one by one (resume=<run dir>), or pass batching.enabled=false.")

    def _execute(self) -> dict[Path, str]:
        self.statuses: dict[Path, str] = {}
        self._open()
        cfgs = [m.run.cfg.optim for m in self.members]
        self.stack = StackedCanonical([m.run.model for m in self.members], [c.lr for c in cfgs],
                                      [c.momentum for c in cfgs], [c.weight_decay for c in cfgs], self.device)
        for i, m in enumerate(self.members):  # a resumed run's SGD momentum (zero for a fresh one)
            self.stack.read_momentum(i, m.run.model, m.run.opt)
        active = list(self.members)
        try:
            active = self._train(active)
        except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: every open run keeps its completed checkpoints
            for m in self.members:
                if m.writer is not None and m.run.run_dir not in self.statuses:
                    self._finish(m, "interrupted", f"stopped by {getattr(exc, 'name', 'SIGINT')}; the last complete "
                                                   f"checkpoint is epoch {m.run.last_checkpoint}")
            raise
        except BaseException as exc:  # the stack itself failed (e.g. out of memory): every open run failed
            for m in active:
                if m.run.run_dir not in self.statuses:
                    self._finish(m, "failed", f"{type(exc).__name__}: {exc}")
            if not isinstance(exc, Exception):
                raise
            log.exception("The batched group stopped")
        return self.statuses

    def _drop(self, active: list[Member], leaving: set[int]) -> list[Member]:
        if leaving:
            keep = [i for i in range(len(active)) if i not in leaving]
            if keep:
                self.stack.keep(keep)
            active = [active[i] for i in keep]
        return active

    def _train(self, active: list[Member]) -> list[Member]:
        """Train the group, with its progress: without a terminal a line at least every 30 s between the
        checkpoint lines (phase, steps, steps/s, remaining time) and once the group's estimated total time."""
        steps_per_epoch = math.ceil(len(self.data.x_train) / self.batch_size)
        last = max((m.epochs for m in active), default=0)
        terminal = sys.stderr.isatty()  # as tqdm decides for the bar below (disable=None)
        progress = Progress(f"batched group of {len(self.members)} runs", last * steps_per_epoch, steps_per_epoch,
                            sorted(set().union(*(m.run.checkpoint_steps for m in self.members))),
                            start_step=active[0].state.step if active else 0,
                            emit=(lambda line: None) if terminal else log.info)
        with progress.heartbeat():
            return self._train_epochs(active, progress)

    def _train_epochs(self, active: list[Member], progress: Progress) -> list[Member]:
        first = active[0].state.epoch if active else 0  # the epoch the group continues from (0: a fresh group)
        if first == 0:
            progress.checkpoint_started(0)
            active = self._drop(active, {i for i, m in enumerate(active) if not self._checkpoint(m, i)})
            progress.checkpoint_finished()
        done = {i for i, m in enumerate(active) if m.epochs <= first}  # resumed with no epoch left to train
        for i in done:
            self._finish(active[i], "finished")
        active = self._drop(active, done)
        offset = {id(m): m.state.wall_time for m in active}  # a resumed member's wall time so far
        x = self.data.x_train.reshape(len(self.data.x_train), -1)  # (n, D)
        y = self.data.y_train
        n, B = len(x), self.batch_size
        steps_per_epoch = math.ceil(n / B)
        # checkpoint steps per member (members share n and B, so their steps line up); the mid-epoch ones
        # of step schedules (train.checkpoints.unit=step) are looked up after every step
        steps_of = {id(m): set(m.run.checkpoint_steps) for m in self.members}
        inside = set().union(*steps_of.values()) - {e * steps_per_epoch for e in range(last_epoch(self.members) + 1)}
        last = max((m.epochs for m in active), default=0)
        start = time.perf_counter()
        bar = tqdm(range(first + 1, last + 1), desc=f"{len(active)} runs batched", unit="epoch", dynamic_ncols=True,
                   disable=None)  # None: no bar without a terminal, a log line per checkpoint epoch instead
        logged = (first, 0.0)
        for epoch in bar:
            if not active:
                break
            # each member's own permutation, drawn from its own generator as train_epoch draws it
            perms = torch.stack([torch.randperm(n, generator=m.run.generator) for m in active]).to(x.device)
            total = torch.zeros(len(active), device=x.device)
            leaving: set[int] = set()  # stack rows that leave at the end of this epoch (closed ones keep training)
            for b in range(steps_per_epoch):
                raise_if_stop_requested()  # a signal's stop that Python could not raise where it arrived
                step = (epoch - 1) * steps_per_epoch + b + 1
                progress.chunk_start_at(step - 1)
                idx = perms[:, b * B:(b + 1) * B]  # (K, B)
                total += self.stack.step(x[idx], y[idx])
                progress.chunk_end(step)
                if step in inside:
                    wall = time.perf_counter() - start
                    progress.checkpoint_started(step)
                    for i, m in enumerate(active):
                        if i not in leaving and step in steps_of[id(m)]:
                            m.state = RunState(epoch - 1, step, wall + offset[id(m)])
                            if not self._checkpoint(m, i, perm=perms[i]):
                                leaving.add(i)
                    progress.checkpoint_finished()
            wall = time.perf_counter() - start
            finite = torch.isfinite(total).tolist()
            at_end = any(epoch * steps_per_epoch in steps_of[id(m)] for m in active)
            if at_end:
                progress.checkpoint_started(epoch * steps_per_epoch)  # the epoch's end: its checkpoints
            for i, m in enumerate(active):
                if i in leaving:
                    continue
                m.state = RunState(epoch, epoch * steps_per_epoch, wall + offset[id(m)])
                if not finite[i]:
                    self._finish(m, "diverged", f"The training loss became {float(total[i])} during epoch {epoch} "
                                                f"(optim.lr={m.run.cfg.optim.lr}); the trace keeps every "
                                                f"checkpoint before it.")
                    leaving.add(i)
                elif epoch * steps_per_epoch in steps_of[id(m)] and not self._checkpoint(m, i):
                    leaving.add(i)
                elif epoch == m.epochs:  # its last epoch is always a checkpoint (schedule.checkpoint_epochs)
                    self._finish(m, "finished")
                    leaving.add(i)
            checkpointed = [m for m in self.members if m.run.last_checkpoint == epoch]
            if at_end:
                progress.checkpoint_finished()
            if bar.disable and checkpointed:
                progress.checkpoint_line(self._progress_line(epoch, last, (wall - logged[1]) / (epoch - logged[0]),
                                                             checkpointed, len(active) - len(leaving)))
                logged = (epoch, wall)
            active = self._drop(active, leaving)
            bar.set_postfix({"active": len(active)}, refresh=False)
        return active

    def _progress_line(self, epoch: int, last: int, seconds_per_epoch: float, members: list[Member],
                       still_training: int) -> str:
        """One line per checkpoint epoch of the group: the range of each progress number over its members."""
        numbers = [m.numbers for m in members if m.numbers]
        spans = []
        for key in [k for k in (numbers[0] if numbers else {}) if k in ("test_loss", "test_acc") or k.endswith(".J")]:
            values = [n[key] for n in numbers if key in n]
            lo, hi = min(values), max(values)
            spans.append(f"{key} {lo:.4g}" if lo == hi else f"{key} {lo:.4g}–{hi:.4g}")
        return (f"batched group of {len(self.members)} runs, epoch {epoch}/{last}: {seconds_per_epoch:.3g} s/epoch, "
                f"{len(members)} checkpointed, {still_training} training; " + ", ".join(spans))
