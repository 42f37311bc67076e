"""Train a model and record it checkpoint by checkpoint (EOC-training's experiment, SCIENCE.md §1.5).

Data live on the device as tensors; each epoch draws one permutation from a seeded generator and
slices batches out of it (the last, shorter batch included). The step loop never synchronises with
the device: the epoch's summed loss is checked for NaN/inf once per epoch.

A run directory holds ``trace.h5`` (see :mod:`stabilityscope.recording.trace`) and ``state/`` with the
resumable state of the newest checkpoints (model, optimiser, RNG, tracker; loaded with
``weights_only=True``). Per checkpoint: measure → save state (atomic rename) → append to the trace →
prune old states, so the newest checkpoint in the trace always has a state on disk. A resume takes the
newest checkpoint that has both a trace row and a readable state, falling back past a damaged state file.

While it writes, a run holds its directory's lock (:class:`~stabilityscope.recording.lock.RunLock`): a
second writer is refused. Ctrl-C (and SIGTERM in the app) stops it at once with status ``interrupted``
and every completed checkpoint kept. Without a terminal (a log file, a batch job) it logs one line per
checkpoint instead of drawing a progress bar.
"""
from __future__ import annotations

import functools
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
import yaml
from torch import nn
from tqdm.auto import tqdm

from stabilityscope.config import Config, OptimConfig, as_options, to_container, value_of
from stabilityscope.errors import ConfigError, DivergedError, TraceError
from stabilityscope.interrupts import raise_if_stop_requested
from stabilityscope.models.dissect import tracked_records
from stabilityscope.models.registry import build_model
from stabilityscope.recording.lock import RunLock
from stabilityscope.recording.recorder import Recorder
from stabilityscope.recording.trace import METRICS, TraceWriter, open_trace
from stabilityscope.recording.tracking import LayerTracker
from stabilityscope.training.data import InMemoryData, augment_batch, load_dataset
from stabilityscope.training.schedule import checkpoint_epochs
from stabilityscope.training.subsample import apply_subsample

log = logging.getLogger(__name__)
EVAL_CHUNK = 8192  # examples per forward pass when evaluating


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name!r} but CUDA is not available here; use train.device=cpu or auto.")
    return torch.device(name)


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """SGD(+momentum) or Adam; weight decay (PyTorch convention = 2 × Keras λ) on weight matrices only."""
    cfg = as_options(cfg, OptimConfig, "optim")
    decayed = [p for p in model.parameters() if p.ndim >= 2]
    plain = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decayed, "weight_decay": cfg.weight_decay}, {"params": plain, "weight_decay": 0.0}]
    name = value_of(cfg.name)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    if name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=tuple(cfg.betas))
    raise ConfigError(f"Unknown optim.name={name!r}; allowed: sgd, adam.")


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy (no regularisation term) and accuracy over all of (x, y)."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    for i in range(0, len(x), EVAL_CHUNK):
        logits = model(x[i:i + EVAL_CHUNK])
        yb = y[i:i + EVAL_CHUNK]
        loss_sum += F.cross_entropy(logits, yb, reduction="sum").double()
        correct += (logits.argmax(1) == yb).sum()
    model.train(was_training)
    return float(loss_sum) / len(x), float(correct) / len(x)


def train_epoch(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                batch_size: int, generator: torch.Generator,
                augment: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> torch.Tensor:
    """One pass over a fresh permutation; returns the summed batch loss (a 0-d tensor, not synced).

    ``augment`` (e.g. :func:`~stabilityscope.training.data.augment_batch`) transforms each batch on the device.
    """
    model.train()
    perm = torch.randperm(len(x), generator=generator).to(x.device)
    total = torch.zeros((), device=x.device)
    for i in range(0, len(x), batch_size):
        raise_if_stop_requested()  # a signal's stop that Python could not raise where it arrived
        idx = perm[i:i + batch_size]
        xb = x[idx] if augment is None else augment(x[idx])
        loss = F.cross_entropy(model(xb), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.detach()
    return total


@dataclass
class RunState:
    """What is needed to continue a run after checkpoint ``epoch``."""

    epoch: int
    step: int
    wall_time: float


def _state_path(run_dir: Path, epoch: int) -> Path:
    return run_dir / "state" / f"epoch_{epoch:06d}.pt"


def saved_state_epochs(run_dir: Path) -> list[int]:
    return sorted(int(p.stem.split("_")[1]) for p in (run_dir / "state").glob("epoch_*.pt"))


def save_state(run_dir: Path, run: RunState, model: nn.Module, opt: torch.optim.Optimizer,
               generator: torch.Generator, tracker: LayerTracker) -> None:
    path = _state_path(run_dir, run.epoch)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"epoch": run.epoch, "step": run.step, "wall_time": run.wall_time,
               "model": model.state_dict(), "optimizer": opt.state_dict(),
               "shuffle_rng": generator.get_state(), "torch_rng": torch.get_rng_state(),
               "tracker": tracker.state_dict()}
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)  # atomic: a state file is either complete or absent


def prune_states(run_dir: Path, keep: int) -> None:
    for epoch in saved_state_epochs(run_dir)[:-keep]:
        _state_path(run_dir, epoch).unlink(missing_ok=True)


def load_state(run_dir: Path, epoch: int, device: torch.device) -> dict[str, Any]:
    return torch.load(_state_path(run_dir, epoch), map_location=device, weights_only=True)




def progress_line(name: str, epoch: int, epochs: int, seconds_per_epoch: float, numbers: dict[str, float]) -> str:
    """One checkpoint's progress for logs without a terminal: run, epoch, s/epoch, test numbers, first J's."""
    shown = {k: v for k, v in numbers.items() if k in ("test_loss", "test_acc") or k.endswith(".J")}
    return (f"{name} epoch {epoch}/{epochs}: {seconds_per_epoch:.3g} s/epoch, "
            + ", ".join(f"{k} {v:.4g}" for k, v in shown.items()))


class Run:
    """A training run: data, model, optimiser, tracker and trace of one configuration."""

    def __init__(self, cfg: Config, run_dir: Path, data: Optional[InMemoryData] = None) -> None:
        self.cfg, self.run_dir = as_options(cfg, Config), Path(run_dir)
        cfg = self.cfg
        self.device = resolve_device(str(cfg.train.device))
        data = data or load_dataset(cfg.dataset.name, cfg.dataset.root, download=cfg.dataset.download,
                                    train_subset=cfg.dataset.train_subset, test_subset=cfg.dataset.test_subset,
                                    normalize=cfg.dataset.normalize, binarize=cfg.dataset.binarize)
        data = apply_subsample(data, cfg.dataset, cfg.model, cfg.train.seed, self.device)  # before any training
        torch.manual_seed(cfg.train.seed)  # after the subsample's reference model: the same init with or without
        self.data = data.to(self.device)
        self.model = build_model(cfg.model, data.input_shape, data.num_classes).to(self.device)
        self.opt = build_optimizer(self.model, cfg.optim)
        self.generator = torch.Generator().manual_seed(cfg.train.seed)
        self.augment = None
        if cfg.dataset.augment:  # random crop + flip per batch, drawn from the (saved) shuffle generator
            self.augment = functools.partial(augment_batch, generator=self.generator, pad_value=data.pad_value)
        records = tracked_records(self.model, cfg.model, cfg.analysis, data.input_shape)
        # the one path of checkpoint recording (the same object a user's own loop uses); the run
        # directory's lock is taken by execute(), and the tracker's state is saved with the run's state
        self.recorder = Recorder(
            self.model, self.run_dir, probe_inputs=self.data.x_test, options=cfg.analysis, records=records,
            config=to_container(cfg), storage=cfg.storage, metrics=METRICS, lock=False, save_tracker_state=False,
            attrs={"seed": int(cfg.train.seed), "model": cfg.model.name, "dataset": cfg.dataset.name,
                   "device": str(self.device), "task": "train"},
            tensorboard=cfg.logging.tensorboard_dir or cfg.logging.tensorboard,
            mlflow=cfg.logging.mlflow_uri or cfg.logging.mlflow,
            geometry_inputs=self.data.x_train[: cfg.analysis.geometry_samples],
            geometry_labels=self.data.y_train[: cfg.analysis.geometry_samples])
        self.tracker = self.recorder.tracker
        sched = cfg.train.checkpoints
        self.schedule = checkpoint_epochs(cfg.train.epochs, sched.kind, sched.every, sched.num, list(sched.epochs))
        self.steps_per_epoch = math.ceil(len(data.x_train) / cfg.train.batch_size)
        self.weight_epochs = set(self.schedule[:: cfg.storage.weights_every]) | {0, cfg.train.epochs}
        self.last_checkpoint: Optional[int] = None  # epoch of the newest checkpoint in the trace

    # -- checkpoints -----------------------------------------------------------------------
    def checkpoint(self, run: RunState) -> dict[str, float]:
        """Evaluate, measure, save the resumable state and append one trace row; returns the progress numbers."""
        d = self.data
        train_loss, train_acc = evaluate(self.model, d.x_train, d.y_train)
        test_loss, test_acc = evaluate(self.model, d.x_test, d.y_test)
        metrics = dict(zip(METRICS, (train_loss, train_acc, test_loss, test_acc)))
        layer_stats = self.recorder.record(
            run.epoch, run.step, run.wall_time, metrics, store_weights=run.epoch in self.weight_epochs,
            before_commit=lambda: save_state(self.run_dir, run, self.model, self.opt, self.generator, self.tracker))
        self.last_checkpoint = run.epoch
        prune_states(self.run_dir, self.cfg.train.keep_states)
        if not all(math.isfinite(v) for v in (train_loss, test_loss)):
            raise DivergedError(f"The loss became {train_loss} at epoch {run.epoch} (lr={self.cfg.optim.lr}).")
        coupling = [(n, s["J"]) for n, s in layer_stats.items() if "J" in s][:2]  # a large model has many
        return {**metrics, **{f"{n}.J": j for n, j in coupling}}

    def _config_yaml(self) -> str:
        return yaml.safe_dump(to_container(self.cfg), sort_keys=False)

    def new_writer(self, batch_group: int = 1) -> TraceWriter:
        """Create the run's trace; ``batch_group`` > 1 records that it trained in a batched group of that size."""
        return self.recorder.create(attrs={"batch_group": int(batch_group)})

    def _restore(self) -> RunState:
        """Reopen the trace at the newest checkpoint that has both a trace row and a readable saved state.

        A state file that does not load (damaged, cut short) is skipped with a warning for the one
        before it; states newer than the one used are removed, since training will write them again.
        """
        with open_trace(self.run_dir / "trace.h5") as tr:
            done = [int(e) for e in tr.checkpoints]
        usable = sorted(set(done) & set(saved_state_epochs(self.run_dir)))
        if not usable:
            raise TraceError(f"{self.run_dir} has no checkpoint with a saved state to resume from; start a new run.")
        for epoch in reversed(usable):
            try:
                state = load_state(self.run_dir, epoch, self.device)
                self.model.load_state_dict(state["model"])
                self.opt.load_state_dict(state["optimizer"])
                self.generator.set_state(state["shuffle_rng"])
                torch.set_rng_state(state["torch_rng"])
                self.tracker.load_state_dict(state["tracker"])
                break
            except Exception as exc:  # a damaged file fails in many ways (zip, unpickler, struct, shapes)
                log.warning("The saved state of epoch %d in %s is unreadable (%s: %s); trying the one before it",
                            epoch, self.run_dir, type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc) else "")
        else:
            raise TraceError(f"{self.run_dir}: none of the saved states ({', '.join(map(str, usable))}) could be "
                             f"read, so the run cannot be resumed; start a new run.")
        for newer in saved_state_epochs(self.run_dir):
            if newer > epoch:
                _state_path(self.run_dir, newer).unlink(missing_ok=True)
        self.recorder.reopen(keep=done.index(epoch) + 1, attrs={"config": self._config_yaml()})
        return RunState(epoch, int(state["step"]), float(state["wall_time"]))

    # -- the loop ----------------------------------------------------------------------------
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
        can_resume = resume and (self.run_dir / "trace.h5").exists() and saved_state_epochs(self.run_dir)
        if can_resume:
            run = self._restore()
            log.info("Resuming %s after epoch %d", self.run_dir, run.epoch)
            self.last_checkpoint = run.epoch
        else:
            self.new_writer()
            run = RunState(0, 0, 0.0)
        status, error = "failed", None
        try:
            if not can_resume:
                self.checkpoint(run)
            start = time.perf_counter() - run.wall_time
            bar = tqdm(range(run.epoch + 1, self.cfg.train.epochs + 1), desc=str(self.run_dir.name),
                       unit="epoch", initial=run.epoch, total=self.cfg.train.epochs, dynamic_ncols=True,
                       disable=None)  # None: no bar without a terminal, a log line per checkpoint instead
            logged = (run.epoch, run.wall_time)
            for epoch in bar:
                loss_sum = train_epoch(self.model, self.opt, self.data.x_train, self.data.y_train,
                                       self.cfg.train.batch_size, self.generator, self.augment)
                run = RunState(epoch, run.step + self.steps_per_epoch, time.perf_counter() - start)
                if not math.isfinite(float(loss_sum)):
                    raise DivergedError(f"The training loss became {float(loss_sum)} during epoch {epoch} "
                                        f"(optim.lr={self.cfg.optim.lr}); the trace keeps every checkpoint "
                                        f"before it.")
                if epoch in self.schedule:
                    postfix = self.checkpoint(run)
                    bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items() if k != "train_acc"}, refresh=False)
                    if bar.disable:
                        per_epoch = (run.wall_time - logged[1]) / max(1, epoch - logged[0])
                        log.info(progress_line(self.run_dir.name, epoch, self.cfg.train.epochs, per_epoch, postfix))
                        logged = (epoch, run.wall_time)
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
