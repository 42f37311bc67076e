"""Train a model and record it checkpoint by checkpoint (EOC-training's experiment, docs/science/mean-field.md).

Data live on the device as tensors; each epoch draws one permutation from a seeded generator and
slices batches out of it (the last, shorter batch included). The step loop never synchronises with
the device: the epoch's summed loss is checked for NaN/inf once per epoch.

Checkpoints follow ``train.checkpoints`` in epochs or, with ``unit=step``, in optimiser steps (inside
an epoch too: SGD-complexity's first phase lasts a few thousand steps); the loop trains up to the next
checkpoint step, so an epoch schedule trains exactly as whole epochs did. Every checkpoint stores the
test set's predicted classes; ``analysis.explainability`` adds SGD-complexity's information measures
against a linear baseline L fitted once per run (:mod:`stabilityscope.training.baseline`, cached in
``baseline.pt``).

The canonical network trained by SGD steps through the hand-written update of
:mod:`stabilityscope.training.stacked` (``train.fast_step``; equal to autograd + ``torch.optim.SGD``
within float32 round-off); every other model through autograd and its optimiser. On a CPU its checkpoints
run beside training (``train.overlap_checkpoints``): the stack holds the weights that train, the model
holds a copy of them at the checkpoint, and a worker thread measures and records that copy on its own
share of the threads while the next steps run on the rest (:class:`CoreShare`; one checkpoint in flight
at a time, recorded in order, checkpoint 0 included).

A regression table (``data.task == "regression"``, e.g. Abalone) trains with the mean squared error and
records ``train_loss``/``test_loss`` as MSEs plus ``train_r2``/``test_r2`` (trace attr ``loss = mse``, no
accuracy); the hand-written SGD step and batched groups are cross-entropy's and refuse it.
``model.init=mars`` (Spline-FC) fits MARS on the training split before checkpoint 0 and writes it into the
model (:mod:`stabilityscope.models.spline_init`); the fit's seconds start the run's wall time and its
numbers go into the trace attrs (``mars_*``). A resume loads the trained weights and does not fit again.

A run directory holds ``trace.h5`` (see :mod:`stabilityscope.recording.trace`) and ``state/`` with the
resumable state of the newest checkpoints (model, optimiser, RNG, tracker, and the epoch's permutation
when a checkpoint falls inside an epoch; loaded with ``weights_only=True``). Per checkpoint: measure →
save state (atomic rename) → append to the trace → prune old states, so the newest checkpoint in the trace
always has a state on disk. A resume takes the newest checkpoint that has both a trace row and a readable
state, falling back past a damaged state file.

While it writes, a run holds its directory's lock (:class:`~stabilityscope.recording.lock.RunLock`): a
second writer is refused. Ctrl-C (and SIGTERM in the app) stops it at once with status ``interrupted``
and every completed checkpoint kept (a checkpoint in flight in the worker is finished first). Without a
terminal (a log file, a batch job) it logs one line per checkpoint and, in between, a line at least every
30 s with its phase, speed and remaining time, instead of drawing a progress bar; after the first steps one
line states the run's estimated total time (:mod:`stabilityscope.training.progress`).
"""
from __future__ import annotations

import bisect
import functools
import logging
import math
import os
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from tqdm.auto import tqdm

from stabilityscope.config import AnalysisConfig, Config, OptimConfig, as_options, to_container, value_of
from stabilityscope.control.controller import EdgeController
from stabilityscope.errors import ConfigError, DivergedError, TraceError
from stabilityscope.interrupts import raise_if_stop_requested
from stabilityscope.models.registry import build_model
from stabilityscope.models.spline_init import check_spline_init, spline_initialise
from stabilityscope.recording.lock import RunLock
from stabilityscope.recording.recorder import ExplainabilityInputs, GeometryInputs, Recorder
from stabilityscope.recording.trace import EXPLAINABILITY_METRICS, METRICS, REGRESSION_METRICS, TraceWriter, open_trace
from stabilityscope.recording.tracking import LayerTracker
from stabilityscope.theory.information import mutual_information, performance_correlation
from stabilityscope.training.baseline import LinearBaseline, fit_linear_baseline, load_baseline
from stabilityscope.training.data import InMemoryData, augment_batch, hold_out, load_dataset
from stabilityscope.training.progress import Progress
from stabilityscope.training.schedule import checkpoint_steps, steps_per_epoch
from stabilityscope.training.stacked import StackedCanonical, stacked_step_obstacle
from stabilityscope.training.subsample import apply_subsample

log = logging.getLogger(__name__)
EVAL_CHUNK = 8192  # examples per forward pass when evaluating
# dataset.validation: the held-out training examples' loss and accuracy (regression: MSE and R²)
VALIDATION_METRICS = {"classification": ("val_loss", "val_acc"), "regression": ("val_loss", "val_r2")}


def resolve_device(name: str) -> torch.device:
    """The device of ``train.device``: ``auto`` is CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name!r} but CUDA is not available here; use train.device=cpu or auto.")
    return torch.device(name)


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """SGD(+momentum), Adam or AdamW; weight decay (PyTorch convention = 2 × Keras λ; AdamW's decoupled) on
    weight matrices only, never on biases or norm scales (timm's default grouping)."""
    cfg = as_options(cfg, OptimConfig, "optim")
    decayed = [p for p in model.parameters() if p.ndim >= 2]
    plain = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decayed, "weight_decay": cfg.weight_decay}, {"params": plain, "weight_decay": 0.0}]
    name = value_of(cfg.name)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    if name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=tuple(cfg.betas))
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))
    raise ConfigError(f"Unknown optim.name={name!r}; allowed: sgd, adam, adamw.")


def learning_rate_schedule(cfg: OptimConfig, total_steps: int,
                           steps_per_epoch: int) -> Optional[Callable[[int], float]]:
    """The learning rate before optimiser step s (0-based) of the run, or None for a constant rate.

    ``cosine``: linear warm-up over the first w = round(warmup_epochs · steps_per_epoch) steps,
    lr·(s + 1)/w, then lr_min + ½(lr − lr_min)(1 + cos(π·(s − w)/(T − w − 1))) down to lr_min at the
    last step T − 1 (SGDR without restarts, Loshchilov & Hutter 2017, as timm's cosine scheduler by
    step). A function of the global step alone, so a resumed run continues on the same curve.
    """
    cfg = as_options(cfg, OptimConfig, "optim")
    if value_of(cfg.schedule) == "constant":
        return None
    warm = min(int(round(cfg.warmup_epochs * steps_per_epoch)), max(total_steps - 1, 0))
    span = max(total_steps - warm - 1, 1)

    def lr_at(step: int) -> float:
        if step < warm:
            return cfg.lr * (step + 1) / warm
        progress = min(max(step - warm, 0) / span, 1.0)
        return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + math.cos(math.pi * progress))

    return lr_at


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             predictions: bool = False) -> tuple[float, float] | tuple[float, float, torch.Tensor]:
    """Mean cross-entropy (no regularisation term) and accuracy over all of (x, y); with ``predictions``
    also the argmax class of every example (n,)."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    classes = []
    for i in range(0, len(x), EVAL_CHUNK):
        logits = model(x[i:i + EVAL_CHUNK])
        yb = y[i:i + EVAL_CHUNK]
        loss_sum += F.cross_entropy(logits, yb, reduction="sum").double()
        predicted = logits.argmax(1)
        correct += (predicted == yb).sum()
        classes.append(predicted)
    model.train(was_training)
    if predictions:
        return float(loss_sum) / len(x), float(correct) / len(x), torch.cat(classes)
    return float(loss_sum) / len(x), float(correct) / len(x)


@torch.no_grad()
def evaluate_regression(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean squared error over all of (x, y (n, p)) (mean over examples and outputs, the training loss) and
    R² = 1 − SSE/SST, SST about this split's own mean of y (scikit-learn's r2_score convention, outputs pooled)."""
    was_training = model.training
    model.eval()
    sse = torch.zeros((), dtype=torch.float64, device=x.device)
    for i in range(0, len(x), EVAL_CHUNK):
        sse += ((model(x[i:i + EVAL_CHUNK]).double() - y[i:i + EVAL_CHUNK].double()) ** 2).sum()
    model.train(was_training)
    yd = y.double()
    sst = float(((yd - yd.mean(0)) ** 2).sum())
    return float(sse) / y.numel(), (1.0 - float(sse) / sst) if sst > 0 else math.nan


def checkpoint_metrics(model: nn.Module, data: InMemoryData,
                       predictions: bool = False) -> tuple[dict[str, float], Optional[torch.Tensor]]:
    """The standard metrics of ``data.task`` (:data:`METRICS` for classification, :data:`REGRESSION_METRICS`:
    MSE and R² for regression) on both splits; with ``predictions``, the test classes (classification only)."""
    if data.task == "regression":
        train_mse, train_r2 = evaluate_regression(model, data.x_train, data.y_train)
        test_mse, test_r2 = evaluate_regression(model, data.x_test, data.y_test)
        return dict(zip(REGRESSION_METRICS, (train_mse, test_mse, train_r2, test_r2))), None
    train_loss, train_acc = evaluate(model, data.x_train, data.y_train)
    predicted = None
    if predictions:
        test_loss, test_acc, predicted = evaluate(model, data.x_test, data.y_test, predictions=True)
    else:
        test_loss, test_acc = evaluate(model, data.x_test, data.y_test)
    return dict(zip(METRICS, (train_loss, train_acc, test_loss, test_acc))), predicted


def loss_function(data: InMemoryData,
                  label_smoothing: float = 0.0) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The training loss of ``data.task``: softmax cross-entropy (classes, with ``label_smoothing``) or mean
    squared error (regression)."""
    if data.task == "regression":
        return F.mse_loss
    return functools.partial(F.cross_entropy, label_smoothing=label_smoothing) if label_smoothing else F.cross_entropy


def train_steps(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                batch_size: int, perm: torch.Tensor, first: int, stop: int,
                augment: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
                lr_at: Optional[Callable[[int], float]] = None, step0: int = 0) -> torch.Tensor:
    """Batches ``first`` .. ``stop`` − 1 of one epoch's permutation ``perm`` (n,); returns the summed batch
    loss (a 0-d tensor, not synced).

    ``augment`` (e.g. :func:`~stabilityscope.training.data.augment_batch`) transforms each batch on the device;
    ``loss_fn``: cross-entropy on class labels, or ``F.mse_loss`` on regression targets (:func:`loss_function`);
    ``lr_at`` (:func:`learning_rate_schedule`) sets the learning rate before each step from its global
    index, ``step0`` + batch index (``step0``: the run's step at batch 0 of this epoch).
    """
    model.train()
    total = torch.zeros((), device=x.device)
    for b in range(first, stop):
        raise_if_stop_requested()  # a signal's stop that Python could not raise where it arrived
        if lr_at is not None:
            lr = lr_at(step0 + b)
            for group in opt.param_groups:
                group["lr"] = lr
        idx = perm[b * batch_size:(b + 1) * batch_size]
        xb = x[idx] if augment is None else augment(x[idx])
        loss = loss_fn(model(xb), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.detach()
    return total


def stacked_steps(stack: StackedCanonical, x: torch.Tensor, y: torch.Tensor, batch_size: int, perm: torch.Tensor,
                  first: int, stop: int) -> torch.Tensor:
    """:func:`train_steps` through the hand-written SGD step of one stacked run (x flattened, (n, D))."""
    total = torch.zeros((), device=x.device)
    for b in range(first, stop):
        raise_if_stop_requested()
        idx = perm[b * batch_size:(b + 1) * batch_size]
        total += stack.step(x[idx].unsqueeze(0), y[idx].unsqueeze(0))[0]  # (1, B, D) → losses (1,)
    return total


def train_epoch(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                batch_size: int, generator: torch.Generator,
                augment: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> torch.Tensor:
    """One pass over a fresh permutation drawn from ``generator``; returns the summed batch loss (not synced)."""
    perm = torch.randperm(len(x), generator=generator).to(x.device)
    return train_steps(model, opt, x, y, batch_size, perm, 0, steps_per_epoch(len(x), batch_size), augment)


class CoreShare:
    """The torch threads of training and of the checkpoints measured beside it (``train.overlap_checkpoints``).

    Two parts that each run a team of all the cores' threads stall each other: an OpenMP team waits at
    every barrier for its slowest thread, and on 2 cores one of its threads is always descheduled by the
    other part's. So for the whole run training and the checkpoint worker get ``total // 2`` threads each
    (1 and 1 on 2 cores; the run's last checkpoint, which training only waits for, gets all). The split
    is fixed, not handed back and forth as checkpoints start and end: the thread count changes a GEMM's
    summation order, so a split that followed the worker's timing would make a run's float32 round-off,
    and a chaotic run's future, depend on the machine's load. ``torch.set_num_threads`` sets the calling
    thread's OpenMP team size, so each side sets its own; MKL's count is process-wide, which is why the
    two shares are equal (on an odd count one thread stays idle rather than MKL taking whichever count
    was set last).
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.worker = self.training = max(1, total // 2)

    def split(self) -> None:
        """Training's share, set in the training thread for the rest of the run."""
        torch.set_num_threads(self.training)

    def restore(self) -> None:
        """All threads back to the training thread (the run's end)."""
        torch.set_num_threads(self.total)

    def in_worker(self, fn: Callable[..., Any], last: bool = False) -> Callable[..., Any]:
        """``fn`` run with the worker's share of threads (set in the worker thread itself); the run's last
        checkpoint, which training only waits for, gets them all."""
        @functools.wraps(fn)
        def run(*args: Any) -> Any:
            torch.set_num_threads(self.total if last else self.worker)
            return fn(*args)
        return run


@dataclass
class RunState:
    """What is needed to continue a run after a checkpoint: whole epochs done, optimiser steps, seconds."""

    epoch: int
    step: int
    wall_time: float


def _state_path(run_dir: Path, key: int, unit: str = "epoch") -> Path:
    """A checkpoint's state file: named by its epoch (epoch schedules) or its step (step schedules)."""
    unit = value_of(unit)
    return run_dir / "state" / (f"epoch_{key:06d}.pt" if unit == "epoch" else f"step_{key:09d}.pt")


def saved_state_keys(run_dir: Path, unit: str = "epoch") -> list[int]:
    """Epochs (or steps, for ``unit="step"``) of the checkpoints whose state is on disk."""
    unit = value_of(unit)
    return sorted(int(p.stem.split("_")[1]) for p in (run_dir / "state").glob(f"{unit}_*.pt"))


def resume_step(run_dir: Path, unit: str = "epoch") -> int:
    """The step a resume of ``run_dir`` continues from: its newest checkpoint with both a trace row and a
    saved state (:meth:`Run.restore` takes it, or an older one when that state turns out unreadable); 0
    when there is none."""
    unit = value_of(unit)
    path = Path(run_dir) / "trace.h5"
    if not path.is_file():
        return 0
    with open_trace(path) as tr:
        keys = [int(k) for k in (tr.steps if unit == "step" else tr.checkpoints)]
        steps = [int(s) for s in tr.steps]
    saved = set(saved_state_keys(Path(run_dir), unit))  # one listing of state/, not one per checkpoint
    usable = [i for i, k in enumerate(keys) if k in saved]
    return steps[usable[-1]] if usable else 0


def saved_state_epochs(run_dir: Path) -> list[int]:
    """The epochs of the resumable states kept in ``run_dir``, oldest first."""
    return saved_state_keys(run_dir, "epoch")


def save_state(run_dir: Path, run: RunState, model: nn.Module, opt: torch.optim.Optimizer,
               generator: torch.Generator, tracker: LayerTracker, unit: str = "epoch",
               perm: Optional[torch.Tensor] = None, control: Optional[dict[str, Any]] = None) -> None:
    """Write the resumable state of a checkpoint; ``perm``: the epoch's permutation, for a checkpoint inside it;
    ``control``: the weight-decay controller's state at the checkpoint (train.control=edge)."""
    unit = value_of(unit)
    path = _state_path(run_dir, run.epoch if unit == "epoch" else run.step, unit)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"epoch": run.epoch, "step": run.step, "wall_time": run.wall_time,
               "model": model.state_dict(), "optimizer": opt.state_dict(),
               "shuffle_rng": generator.get_state(), "torch_rng": torch.get_rng_state(),
               "tracker": tracker.state_dict()}
    if perm is not None:
        payload["perm"] = perm.cpu()
    if control is not None:
        payload["control"] = control
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)  # atomic: a state file is either complete or absent


def prune_states(run_dir: Path, keep: int, unit: str = "epoch") -> None:
    """Delete all but the newest ``keep`` resumable states."""
    for key in saved_state_keys(run_dir, unit)[:-keep]:
        _state_path(run_dir, key, unit).unlink(missing_ok=True)


def load_state(run_dir: Path, key: int, device: torch.device, unit: str = "epoch") -> dict[str, Any]:
    """The resumable state saved at epoch (or step) ``key``, loaded onto ``device`` (tensors only)."""
    return torch.load(_state_path(run_dir, key, unit), map_location=device, weights_only=True)


BASELINE_FILE = "baseline.pt"


def run_baseline(data: InMemoryData, run_dir: Path, options: AnalysisConfig) -> LinearBaseline:
    """SGD-complexity's linear baseline L for a run: read from ``run_dir/baseline.pt``, else fitted and saved there."""
    path = Path(run_dir) / BASELINE_FILE
    if path.exists():
        return load_baseline(path, data.x_train.device)
    log.info("Fitting the linear baseline (logistic regression, L-BFGS) on %d training examples", len(data.x_train))
    with warnings.catch_warnings():  # a non-converged fit is recorded in the trace (converged, warning) and logged
        warnings.simplefilter("ignore", RuntimeWarning)
        fit = fit_linear_baseline(data.x_train, data.y_train, data.num_classes, l2=options.baseline_l2,
                                  tol=options.baseline_tol, max_iter=options.baseline_max_iter)
    fit.save(path)
    return fit


def baseline_record(fit: LinearBaseline, data: InMemoryData, options: AnalysisConfig) -> tuple[np.ndarray, dict]:
    """L's test predictions and the trace attrs that describe it (test accuracy, I(L;Y), how the fit ended)."""
    pred = fit.predict(data.x_test).cpu()
    i_ly = mutual_information(pred, data.y_test.cpu(), num_classes=data.num_classes, miller_madow=options.miller_madow)
    warning = "" if fit.converged else (
        f"the linear baseline did not converge: largest gradient entry {fit.grad_max:.3g} after {fit.iterations} "
        f"L-BFGS iterations (analysis.baseline_tol={options.baseline_tol:g}); its numbers are approximate")
    if warning:
        log.warning(warning)
    attrs = {"test_acc": fit.accuracy(data.x_test, data.y_test), "info_L_Y": i_ly, "converged": bool(fit.converged),
             "warning": warning, "iterations": int(fit.iterations), "grad_max": float(fit.grad_max),
             "l2": float(fit.l2), "fit_seconds": float(fit.fit_seconds), "train_loss": float(fit.train_loss)}
    return pred.numpy(), attrs


def check_explainable(model: nn.Module, data: InMemoryData) -> None:
    """analysis.explainability needs class outputs: a classification dataset and logits (B, K)."""
    if data.num_classes < 2 or data.y_test.is_floating_point():
        raise ConfigError(f"analysis.explainability=true needs a classification dataset (class labels); dataset "
                          f"{data.name!r} is not one. SGD-complexity's measures compare predicted classes.")
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(data.x_test[:2])
    model.train(was_training)
    if out.dim() != 2 or out.shape[1] != data.num_classes:
        raise ConfigError(f"analysis.explainability=true needs a model with class outputs (B, {data.num_classes}) "
                          f"for dataset {data.name!r}; this model returns shape {tuple(out.shape)}.")


def progress_line(name: str, epoch: int | str, epochs: int, seconds_per_epoch: float,
                  numbers: dict[str, float]) -> str:
    """One checkpoint's progress for logs without a terminal: run, epoch, s/epoch, test numbers, first J's."""
    shown = {k: v for k, v in numbers.items()
             if k in ("test_loss", "test_acc", "test_r2", "mu_F_L") or k.endswith(".J")}
    return (f"{name} epoch {epoch}/{epochs}: {seconds_per_epoch:.3g} s/epoch, "
            + ", ".join(f"{k} {v:.4g}" for k, v in shown.items()))


class CheckpointQueue:
    """A run's checkpoints, measured in line or, with the hand-written step on a CPU
    (:meth:`Run._overlaps_checkpoints`), in a worker thread beside training.

    Beside training, a checkpoint (evaluation, maps, state file, trace row) runs on the model, a snapshot of
    the stack's weights, while training goes on in the stack: the next checkpoint first waits for it
    (:meth:`collect`), so they stay in order, and an error in it is raised there. An exception in training
    (a stop, a divergence) waits for the checkpoint in flight (:meth:`close`), so every checkpoint begun is
    kept. Checkpoint 0 runs beside the first steps too. Each checkpoint's numbers make one progress line.
    """

    def __init__(self, run: "Run", stack: Optional[StackedCanonical], progress: Progress, start: RunState) -> None:
        self.run, self.progress = run, progress
        overlap = run._overlaps_checkpoints(stack)
        self.worker = ThreadPoolExecutor(1, thread_name_prefix="checkpoint") if overlap else None
        self.pending: Optional[tuple[Future, RunState, int]] = None
        self.cores = CoreShare(torch.get_num_threads())
        if self.worker is not None:
            self.cores.split()  # until the end of the run (restored in close)
        self.first_step = start.step
        self.logged = (start.step, start.wall_time)  # the last checkpoint that logged a line: step, seconds

    def measure(self, run: RunState, perm: Optional[torch.Tensor] = None,
                generator: Optional[torch.Generator] = None) -> dict[str, float]:
        """:meth:`Run.checkpoint`, timed for the progress."""
        self.progress.checkpoint_started(run.step)
        try:
            return self.run.checkpoint(run, perm, generator)
        finally:
            self.progress.checkpoint_finished()

    def submit(self, run: RunState, step: int, mid_epoch: Optional[torch.Tensor]) -> None:
        """Measure the checkpoint at ``run`` (``mid_epoch``: the epoch's permutation, inside an epoch)."""
        if self.worker is None:
            self.report(run, step, self.measure(run, mid_epoch))
            return
        # the shuffle generator as it is now: training draws the next permutation meanwhile
        shuffle = torch.Generator(device=self.run.generator.device)
        shuffle.set_state(self.run.generator.get_state())
        last = step == self.run.total_steps  # training is over: it waits for this one, so it gets every core
        future = self.worker.submit(self.cores.in_worker(self.measure, last), run, mid_epoch, shuffle)
        self.pending = (future, run, step)

    def collect(self) -> None:
        """The checkpoint in flight, finished; its error raised here."""
        if self.pending is not None:
            future, done_run, done_step = self.pending
            try:
                postfix = future.result()
            finally:  # a failed checkpoint is done with; one still running (a stop arrived here) is awaited in close
                if future.done():
                    self.pending = None
            self.report(done_run, done_step, postfix)

    def report(self, run: RunState, step: int, postfix: dict[str, float]) -> None:
        """One checkpoint's progress line; checkpoint 0 (the run's first step) logs none, in line or beside."""
        if step <= self.first_step:
            return
        per_epoch = self.run.steps_per_epoch
        per_epoch_s = (run.wall_time - self.logged[1]) / max(1e-9, (step - self.logged[0]) / per_epoch)
        where = run.epoch if step % per_epoch == 0 else f"{step / per_epoch:.3f} (step {step})"
        shown = {k: v for k, v in postfix.items() if k not in ("train_acc", "train_r2")}
        self.progress.checkpoint_line(
            progress_line(self.run.run_dir.name, where, self.run.cfg.train.epochs, per_epoch_s, postfix),
            ", ".join(f"{k} {v:.4g}" for k, v in shown.items()))
        self.logged = (step, run.wall_time)

    def close(self) -> None:
        """After training, or on its way out with an exception: the checkpoint in flight is finished and kept."""
        if self.pending is not None:
            wait([self.pending[0]])
            if self.pending[0].exception() is not None:  # its own error, besides the one on its way out
                log.error("the checkpoint at step %d failed too: %s", self.pending[2], self.pending[0].exception())
        if self.worker is not None:
            self.worker.shutdown(wait=True)
            self.cores.restore()


class Run:
    """A training run: data, model, optimiser, tracker and trace of one configuration."""

    def __init__(self, cfg: Config, run_dir: Path, data: Optional[InMemoryData] = None,
                 baseline: Optional[LinearBaseline] = None) -> None:
        """``baseline``: a linear baseline L already fitted on this run's training data (a batched group
        shares one); default: ``run_dir/baseline.pt``, else a new fit (analysis.explainability only)."""
        self.cfg, self.run_dir = as_options(cfg, Config), Path(run_dir)
        cfg = self.cfg
        check_spline_init(cfg.model)  # model.init=mars on a model it cannot build: refused before any data is read
        self.device = resolve_device(str(cfg.train.device))
        data = data or load_dataset(cfg.dataset.name, cfg.dataset.root, download=cfg.dataset.download,
                                    train_subset=cfg.dataset.train_subset, test_subset=cfg.dataset.test_subset,
                                    normalize=cfg.dataset.normalize, binarize=cfg.dataset.binarize)
        self.validation: Optional[tuple[torch.Tensor, torch.Tensor]] = None  # dataset.validation: (x, y) held out
        if cfg.dataset.validation:
            data, (x_val, y_val) = hold_out(data, cfg.dataset.validation)
            self.validation = (x_val.to(self.device), y_val.to(self.device))
        data = apply_subsample(data, cfg.dataset, cfg.model, cfg.train.seed, self.device)  # before any training
        torch.manual_seed(cfg.train.seed)  # after the subsample's reference model: the same init with or without
        self.data = data.to(self.device)
        self.model = build_model(cfg.model, data.input_shape, data.num_classes).to(self.device)
        self.task = data.task  # classification (cross-entropy, accuracy) or regression (MSE, R²)
        self.loss_fn = loss_function(data, cfg.train.label_smoothing)
        self.unit = value_of(cfg.train.checkpoints.unit)  # names the state files: epoch_*.pt or step_*.pt
        self.init_seconds, init_attrs = 0.0, {}
        resumable = (self.run_dir / "trace.h5").exists() and saved_state_keys(self.run_dir, self.unit)
        if value_of(cfg.model.init) == "mars" and not resumable:  # a resume loads the trained weights instead
            log.info("Fitting MARS (model.init=mars) on %d training examples", len(data.x_train))
            init = spline_initialise(self.model, cfg.model, self.data.x_train, self.data.y_train, data.task,
                                     seed=cfg.train.seed, x_test=self.data.x_test, y_test=self.data.y_test)
            log.info("MARS: %d terms (%d units) in %.3g s, train R² %.4f", init.attrs["mars_terms"],
                     init.attrs["mars_units"], init.seconds, init.attrs["mars_train_r2"])
            self.init_seconds, init_attrs = init.seconds, init.attrs  # checkpoint 0's wall time: the fit's
        self.opt = build_optimizer(self.model, cfg.optim)
        self.generator = torch.Generator().manual_seed(cfg.train.seed)
        self.augment = None
        if cfg.dataset.augment:  # random crop + flip per batch, drawn from the (saved) shuffle generator
            self.augment = functools.partial(augment_batch, generator=self.generator, pad_value=data.pad_value)
        self.explain = bool(cfg.analysis.explainability)
        base_pred, base_attrs = None, None
        if self.explain:
            check_explainable(self.model, self.data)
            self.baseline = baseline if baseline is not None else run_baseline(self.data, self.run_dir, cfg.analysis)
            if baseline is not None and not (self.run_dir / BASELINE_FILE).exists():
                baseline.save(self.run_dir / BASELINE_FILE)  # the run directory keeps the L it was scored against
            base_pred, base_attrs = baseline_record(self.baseline, self.data, cfg.analysis)
        self.baseline_predictions = base_pred
        classes = data.task == "classification" and not self.data.y_test.is_floating_point() and data.num_classes >= 2
        standard = REGRESSION_METRICS if data.task == "regression" else METRICS
        # the one path of checkpoint recording (the same object a user's own loop uses); the run
        # directory's lock is taken by execute(), and the tracker's state is saved with the run's state
        self.recorder = Recorder.for_app(
            self.model, self.run_dir, probe_inputs=self.data.x_test, options=cfg, config=to_container(cfg),
            lock=False, save_tracker_state=False, metrics=standard + (EXPLAINABILITY_METRICS if self.explain else ())
            + (VALIDATION_METRICS[data.task] if self.validation is not None else ()),
            loss="mse" if data.task == "regression" else "cross_entropy",
            attrs={"seed": int(cfg.train.seed), "model": cfg.model.name, "dataset": cfg.dataset.name,
                   "device": str(self.device), "task": "train", "init": value_of(cfg.model.init), **init_attrs},
            geometry=GeometryInputs(self.data.x_train[: cfg.analysis.geometry_samples],
                                    self.data.y_train[: cfg.analysis.geometry_samples]),
            explainability=ExplainabilityInputs(self.data.y_test if classes else None, data.num_classes, base_pred,
                                                base_attrs or {}))
        self.tracker = self.recorder.tracker
        self.steps_per_epoch = steps_per_epoch(len(data.x_train), cfg.train.batch_size)
        self.total_steps = cfg.train.epochs * self.steps_per_epoch
        self.lr_at = learning_rate_schedule(cfg.optim, self.total_steps, self.steps_per_epoch)
        # the global optimiser step of every checkpoint (an epoch schedule's are multiples of steps_per_epoch)
        self.checkpoint_steps = checkpoint_steps(cfg.train.checkpoints, cfg.train.epochs, len(data.x_train),
                                                 cfg.train.batch_size)
        self.schedule = sorted({s // self.steps_per_epoch for s in self.checkpoint_steps
                                if s % self.steps_per_epoch == 0})  # the checkpoints at the end of an epoch
        self.weight_steps = set(self.checkpoint_steps[:: cfg.storage.weights_every]) | {0, self.total_steps}
        self.last_checkpoint: Optional[int] = None  # epoch of the newest checkpoint in the trace
        self.controller = self._controller()

    def _controller(self) -> Optional[EdgeController]:
        """train.control=edge: the weight-decay controller of this run, recording into its trace (else None)."""
        cfg = self.cfg
        if value_of(cfg.train.control) != "edge":
            return None
        controller = EdgeController(self.model, self.opt, cfg.control, steps_per_epoch=self.steps_per_epoch,
                                    probe_inputs=self.data.x_test, conv1x1=bool(cfg.model.conv1x1))
        if cfg.optim.weight_decay:
            log.info("train.control=edge sets the weight decay of %s from %.3g (control.decay_init) on; "
                     "optim.weight_decay=%g applies to the other parameter groups only", controller.maps,
                     controller.decays[0], cfg.optim.weight_decay)
        self.recorder.attach_controller(controller, restore=False)  # its state is saved with the run's own
        return controller

    def _control(self, step: int, stack: Optional[StackedCanonical]) -> None:
        """The controller's update at ``step``: read (the stack's weights when it trains them), set the decay."""
        weights = stack.matrices(0) if stack is not None else None
        self.controller.update(step, weights)
        if stack is not None:
            stack.set_weight_decay(0, float(self.controller.decays[0]))

    # -- checkpoints -----------------------------------------------------------------------
    def checkpoint(self, run: RunState, perm: Optional[torch.Tensor] = None,
                   generator: Optional[torch.Generator] = None) -> dict[str, float]:
        """Evaluate, measure, save the resumable state and append one trace row; returns the progress numbers.

        ``perm``: the current epoch's permutation, for a checkpoint inside an epoch (saved with the state);
        ``generator``: the shuffle generator as it was at this checkpoint (default: the run's own, now).
        """
        generator = self.generator if generator is None else generator
        metrics, predicted = checkpoint_metrics(self.model, self.data,
                                                predictions=self.recorder.prediction_spec is not None or self.explain)
        train_loss, test_loss = metrics["train_loss"], metrics["test_loss"]
        if self.explain:
            metrics.update(self.explainability(predicted))
        if self.validation is not None:
            score = evaluate_regression if self.task == "regression" else evaluate
            metrics.update(zip(VALIDATION_METRICS[self.task], score(self.model, *self.validation)))
        layer_stats = self.recorder.record(
            run.epoch, run.step, run.wall_time, metrics, store_weights=run.step in self.weight_steps,
            epoch_fraction=run.step / self.steps_per_epoch,
            predictions=predicted if self.recorder.prediction_spec is not None else None,
            before_commit=lambda: save_state(self.run_dir, run, self.model, self.opt, generator, self.tracker,
                                             self.unit, perm, None if self.controller is None
                                             else self.controller.state_at(run.step)))
        self.last_checkpoint = run.epoch
        prune_states(self.run_dir, self.cfg.train.keep_states, self.unit)
        if not all(math.isfinite(v) for v in (train_loss, test_loss)):
            raise DivergedError(f"The loss became {train_loss} at epoch {run.epoch} (lr={self.cfg.optim.lr}).")
        coupling = [(n, s["J"]) for n, s in layer_stats.items() if "J" in s][:2]  # a large model has many
        return {**metrics, **{f"{n}.J": j for n, j in coupling}}

    def _divergence_hint(self) -> str:
        """What usually makes a regression run diverge, for the error message (empty for classification)."""
        if self.task != "regression":
            return ""
        return (f" Regression targets are not rescaled (dataset {self.cfg.dataset.name!r}): try a smaller "
                f"optim.lr, or optim=adam (lr 1e-3), which the dataset's preset uses.")

    def explainability(self, predicted: torch.Tensor) -> dict[str, float]:
        """SGD-complexity's measures of the model's test predictions against the baseline L (bits, with intervals)."""
        a = self.cfg.analysis
        pc = performance_correlation(predicted.cpu(), self.baseline_predictions, self.data.y_test.cpu(),
                                     num_classes=self.data.num_classes, n_boot=a.explainability_boot,
                                     confidence=a.explainability_confidence, miller_madow=a.miller_madow)
        values = (pc.i_fy, *pc.i_fy_interval, pc.i_fy_given_l, pc.mu, *pc.mu_interval)
        return dict(zip(EXPLAINABILITY_METRICS, values))

    def _config_yaml(self) -> str:
        return yaml.safe_dump(to_container(self.cfg), sort_keys=False)

    def new_writer(self, batch_group: int = 1) -> TraceWriter:
        """Create the run's trace; ``batch_group`` > 1 records that it trained in a batched group of that size."""
        return self.recorder.create(attrs={"batch_group": int(batch_group)})

    def restore(self) -> RunState:
        """Reopen the trace at the newest checkpoint that has both a trace row and a readable saved state.

        A state file that does not load (damaged, cut short) is skipped with a warning for the one
        before it; states newer than the one used are removed, since training will write them again.
        """
        with open_trace(self.run_dir / "trace.h5") as tr:  # a checkpoint's key: its epoch, or its step
            done = [int(e) for e in (tr.steps if self.unit == "step" else tr.checkpoints)]
        usable = sorted(set(done) & set(saved_state_keys(self.run_dir, self.unit)))
        if not usable:
            raise TraceError(f"{self.run_dir} has no checkpoint with a saved state to resume from; start a new run.")
        for key in reversed(usable):
            try:
                state = load_state(self.run_dir, key, self.device, self.unit)
                self.model.load_state_dict(state["model"])
                self.opt.load_state_dict(state["optimizer"])
                self.generator.set_state(state["shuffle_rng"])
                torch.set_rng_state(state["torch_rng"])
                self.tracker.load_state_dict(state["tracker"])
                self._perm = state["perm"].to(self.device) if "perm" in state else None
                if self.controller is not None:  # after the optimiser: the controller sets the groups' decays
                    if "control" not in state:
                        raise TraceError(f"{self.run_dir} was trained without train.control=edge; resume it without.")
                    self.controller.load_state_dict(state["control"])
                break
            except Exception as exc:  # a damaged file fails in many ways (zip, unpickler, struct, shapes)
                log.warning("The saved state of %s %d in %s is unreadable (%s: %s); trying the one before it",
                            self.unit, key, self.run_dir, type(exc).__name__,
                            str(exc).splitlines()[0][:200] if str(exc) else "")
        else:
            raise TraceError(f"{self.run_dir}: none of the saved states ({', '.join(map(str, usable))}) could be "
                             f"read, so the run cannot be resumed; start a new run.")
        for newer in saved_state_keys(self.run_dir, self.unit):
            if newer > key:
                _state_path(self.run_dir, newer, self.unit).unlink(missing_ok=True)
        self.recorder.reopen(keep=done.index(key) + 1, attrs={"config": self._config_yaml()})
        return RunState(int(state["epoch"]), int(state["step"]), float(state["wall_time"]))

    # -- the loop ----------------------------------------------------------------------------
    def _stacked_step(self) -> Optional[StackedCanonical]:
        """The hand-written SGD step for this run (train.fast_step and the canonical network trained by SGD),
        holding the model's weights and the optimiser's momentum buffers (a resumed run's too); else None."""
        if not self.cfg.train.fast_step or stacked_step_obstacle(self.cfg) is not None:
            return None
        o = self.cfg.optim
        stack = StackedCanonical([self.model], [o.lr], [o.momentum], [o.weight_decay], self.device)
        stack.read_momentum(0, self.model, self.opt)
        if self.controller is not None:  # one decayed group, as the stack's one decay per member
            if self.controller.group_index != [0]:
                raise ConfigError(f"train.fast_step: the controller sets the decay of optimiser groups "
                                  f"{self.controller.group_index}; the hand-written step has one (group 0). Use "
                                  f"train.fast_step=false.")
            stack.set_weight_decay(0, float(self.controller.decays[0]))
        self._flat_x = self.data.x_train.reshape(len(self.data.x_train), -1)  # (n, D): a view, no copy
        return stack

    def _overlaps_checkpoints(self, stack: Optional[StackedCanonical]) -> bool:
        """Whether checkpoints run beside training (train.overlap_checkpoints): only for the hand-written step
        on a CPU, where training holds its weights in the stack and the model is a snapshot of them."""
        return bool(self.cfg.train.overlap_checkpoints and stack is not None and self.device.type == "cpu")

    def _train_from(self, run: RunState, initial_checkpoint: bool = False) -> None:
        """Train from ``run`` to ``train.epochs``, checkpointing at every scheduled step (and at ``run``
        itself with ``initial_checkpoint``: checkpoint 0 of a new run).

        Each epoch draws one permutation; training stops at the next checkpoint step or the epoch's end,
        whichever comes first (an epoch schedule trains whole epochs, as before step schedules existed),
        and, to say how it goes, every few seconds in between (:meth:`Progress.chunk_stop`; the batches and
        their order are the same). The summed loss is checked for NaN/inf at the end of each epoch and by
        every checkpoint. Checkpoints go through a :class:`CheckpointQueue`: in line, or beside training.
        """
        stack = self._stacked_step()
        start = time.perf_counter() - run.wall_time
        bar = tqdm(total=self.total_steps, initial=run.step, desc=str(self.run_dir.name), unit="step",
                   dynamic_ncols=True, disable=None)  # None: no bar without a terminal, log lines instead
        progress = Progress(str(self.run_dir.name), self.total_steps, self.steps_per_epoch, self.checkpoint_steps,
                            start_step=run.step, overlap=self._overlaps_checkpoints(stack),
                            bar=None if bar.disable else bar, emit=log.info)
        queue = CheckpointQueue(self, stack, progress, run)
        try:
            with progress.heartbeat():
                if initial_checkpoint:  # beside training, the model holds the initial weights, the stack its copy
                    queue.submit(run, run.step, None)
                self._train_steps_to_end(run, stack, queue, progress, start)
                queue.collect()
        finally:
            queue.close()
            bar.close()

    def _train_steps_to_end(self, run: RunState, stack: Optional[StackedCanonical], queue: "CheckpointQueue",
                            progress: Progress, start: float) -> None:
        """The loop of :meth:`_train_from`: chunks of steps, the epoch's divergence check, the checkpoints."""
        d, batch = self.data, self.cfg.train.batch_size
        per_epoch, checkpoints = self.steps_per_epoch, self.checkpoint_steps
        perm, loss_sum, step = self._perm, torch.zeros((), device=self.device), run.step
        while step < self.total_steps:
            epoch, offset = divmod(step, per_epoch)
            if offset == 0 or perm is None:
                perm = torch.randperm(len(d.x_train), generator=self.generator).to(self.device)
            stop = min(checkpoints[bisect.bisect_right(checkpoints, step)], (epoch + 1) * per_epoch)
            if self.controller is not None:  # the controller acts between steps: stop there too
                stop = min(stop, self.controller.next_update(step))
            stop = progress.chunk_stop(step, stop)
            progress.chunk_start_at(step)
            if stack is None:
                loss_sum += train_steps(self.model, self.opt, d.x_train, d.y_train, batch, perm, offset,
                                        stop - epoch * per_epoch, self.augment, self.loss_fn, self.lr_at,
                                        epoch * per_epoch)
            else:
                loss_sum += stacked_steps(stack, self._flat_x, d.y_train, batch, perm, offset, stop - epoch * per_epoch)
            step = stop
            progress.chunk_end(step)
            if self.controller is not None and self.controller.due(step):  # before a checkpoint at this step
                self._control(step, stack)
            run = RunState(step // per_epoch, step, time.perf_counter() - start)
            if step % per_epoch == 0:
                if not math.isfinite(float(loss_sum)):
                    raise DivergedError(f"The training loss became {float(loss_sum)} during epoch {run.epoch} "
                                        f"(optim.lr={self.cfg.optim.lr}); the trace keeps every checkpoint "
                                        f"before it.{self._divergence_hint()}")
                loss_sum.zero_()
            if step in self.checkpoint_steps or step == self.total_steps:
                queue.collect()  # the previous checkpoint reads the model: done before it is overwritten
                if stack is not None:
                    stack.write_member(0, self.model, self.opt, step)  # the model and SGD state it reads
            if step in self.checkpoint_steps:
                queue.submit(run, step, perm if step % per_epoch else None)

    def execute(self, resume: bool = False) -> str:
        """Train to ``train.epochs``; returns the final status.

        Raises:
            DivergedError: a NaN/inf loss (status ``diverged``).
            RunLockedError: another process is writing this run directory.
            KeyboardInterrupt: Ctrl-C or, in the app, SIGTERM (status ``interrupted``).
        """
        with RunLock(self.run_dir):
            return self._execute(resume)

    def _execute(self, resume: bool) -> str:
        can_resume = (resume and (self.run_dir / "trace.h5").exists()
                      and saved_state_keys(self.run_dir, self.unit))
        self._perm: Optional[torch.Tensor] = None  # the current epoch's permutation (restored mid-epoch)
        if can_resume:
            run = self.restore()
            log.info("Resuming %s after step %d (epoch %.4g)", self.run_dir, run.step, run.step / self.steps_per_epoch)
            self.last_checkpoint = run.epoch
        else:
            self.new_writer()
            run = RunState(0, 0, self.init_seconds)  # a spline init's fit is part of the run's wall time
        status, error = "failed", None
        try:
            self._train_from(run, initial_checkpoint=not can_resume)
            status = "finished"
        except DivergedError as exc:
            status, error = "diverged", str(exc)
            raise
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM turned into Interrupted by the app
            status = "interrupted"
            error = (f"stopped by {getattr(exc, 'name', 'SIGINT')}; the last complete checkpoint is epoch "
                     f"{self.last_checkpoint}")
            raise
        except BaseException as exc:  # the trace says why it failed; the exception goes on to the caller
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self.recorder.close(status, error=error)
        return status
