"""Train a model and record it checkpoint by checkpoint (EOC-training's experiment, SCIENCE.md §1.5).

Data live on the device as tensors; each epoch draws one permutation from a seeded generator and
slices batches out of it (the last, shorter batch included). The step loop never synchronises with
the device: the epoch's summed loss is checked for NaN/inf once per epoch.

A run directory holds ``trace.h5`` (see :mod:`stabilityscope.recording.trace`) and ``state/`` with the
resumable state of the newest checkpoints (model, optimiser, RNG, tracker; loaded with
``weights_only=True``). Per checkpoint: measure → save state (atomic rename) → append to the trace →
prune old states, so the newest checkpoint in the trace always has a state on disk.
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
from stabilityscope.models.registry import build_model
from stabilityscope.recording.trace import METRICS, TraceWriter, open_trace
from stabilityscope.models.dissect import tracked_records
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


class Run:
    """A training run: data, model, optimiser, tracker and trace of one configuration."""

    def __init__(self, cfg: Config, run_dir: Path, data: Optional[InMemoryData] = None) -> None:
        self.cfg, self.run_dir = as_options(cfg, Config), Path(run_dir)
        cfg = self.cfg
        self.device = resolve_device(str(cfg.train.device))
        data = data or load_dataset(cfg.dataset.name, cfg.dataset.root, download=cfg.dataset.download,
                                    train_subset=cfg.dataset.train_subset, test_subset=cfg.dataset.test_subset,
                                    normalize=cfg.dataset.normalize)
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
        self.tracker = LayerTracker(self.model, records, cfg.analysis,
                                    probe_inputs=self.data.x_test[: cfg.analysis.n_inputs],
                                    geometry_inputs=self.data.x_train[: cfg.analysis.geometry_samples],
                                    geometry_labels=self.data.y_train[: cfg.analysis.geometry_samples])
        sched = cfg.train.checkpoints
        self.schedule = checkpoint_epochs(cfg.train.epochs, sched.kind, sched.every, sched.num, list(sched.epochs))
        self.steps_per_epoch = math.ceil(len(data.x_train) / cfg.train.batch_size)
        self.weight_epochs = set(self.schedule[:: cfg.storage.weights_every]) | {0, cfg.train.epochs}

    # -- checkpoints -----------------------------------------------------------------------
    def checkpoint(self, writer: TraceWriter, run: RunState) -> dict[str, float]:
        """Evaluate, measure, save the resumable state and append one trace row; returns the progress numbers."""
        d = self.data
        train_loss, train_acc = evaluate(self.model, d.x_train, d.y_train)
        test_loss, test_acc = evaluate(self.model, d.x_test, d.y_test)
        metrics = dict(zip(METRICS, (train_loss, train_acc, test_loss, test_acc)))
        layer_stats = self.tracker.measure(self.model)
        weights = None
        if self.cfg.storage.weights and run.epoch in self.weight_epochs:
            weights = {n: w.cpu().numpy() for n, w in self.tracker.weights(self.model).items()}
        save_state(self.run_dir, run, self.model, self.opt, self.generator, self.tracker)
        writer.append(epoch=run.epoch, step=run.step, wall_time=run.wall_time, metrics=metrics,
                      layer_stats=layer_stats, weights=weights)
        prune_states(self.run_dir, self.cfg.train.keep_states)
        if not all(math.isfinite(v) for v in (train_loss, test_loss)):
            raise DivergedError(f"The loss became {train_loss} at epoch {run.epoch} (lr={self.cfg.optim.lr}).")
        coupling = [(n, s["J"]) for n, s in layer_stats.items() if "J" in s][:2]  # a large model has many
        return {**metrics, **{f"{n}.J": j for n, j in coupling}}

    def _config_yaml(self) -> str:
        return yaml.safe_dump(to_container(self.cfg), sort_keys=False)

    def new_writer(self, batch_group: int = 1) -> TraceWriter:
        """Create the run's trace; ``batch_group`` > 1 records that it trained in a batched group of that size."""
        attrs = {"config": self._config_yaml(),
                 "seed": int(self.cfg.train.seed), "model": self.cfg.model.name,
                 "dataset": self.cfg.dataset.name, "device": str(self.device), "task": "train",
                 "torch_threads": torch.get_num_threads(), "batch_group": int(batch_group)}
        return TraceWriter.create(self.run_dir / "trace.h5", attrs=attrs,
                                  layers=self.tracker.layer_specs(store_weights=self.cfg.storage.weights),
                                  weights_dtype=value_of(self.cfg.storage.weights_dtype))

    def _restore(self) -> tuple[TraceWriter, RunState]:
        """Reopen the trace at the newest checkpoint that has both a trace row and a saved state."""
        with open_trace(self.run_dir / "trace.h5") as tr:
            done = [int(e) for e in tr.checkpoints]
        usable = sorted(set(done) & set(saved_state_epochs(self.run_dir)))
        if not usable:
            raise TraceError(f"{self.run_dir} has no checkpoint with a saved state to resume from; start a new run.")
        epoch = usable[-1]
        state = load_state(self.run_dir, epoch, self.device)
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.generator.set_state(state["shuffle_rng"])
        torch.set_rng_state(state["torch_rng"])
        self.tracker.load_state_dict(state["tracker"])
        writer = TraceWriter.reopen(self.run_dir / "trace.h5", keep=done.index(epoch) + 1,
                                    attrs={"config": self._config_yaml()})
        return writer, RunState(epoch, int(state["step"]), float(state["wall_time"]))

    # -- the loop ----------------------------------------------------------------------------
    def execute(self, resume: bool = False) -> str:
        """Train to ``train.epochs``; returns the final status. Raises DivergedError on NaN/inf."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        can_resume = resume and (self.run_dir / "trace.h5").exists() and saved_state_epochs(self.run_dir)
        if can_resume:
            writer, run = self._restore()
            log.info("Resuming %s after epoch %d", self.run_dir, run.epoch)
        else:
            writer, run = self.new_writer(), RunState(0, 0, 0.0)
        status, error = "failed", None
        try:
            if not can_resume:
                self.checkpoint(writer, run)
            start = time.perf_counter() - run.wall_time
            bar = tqdm(range(run.epoch + 1, self.cfg.train.epochs + 1), desc=str(self.run_dir.name),
                       unit="epoch", initial=run.epoch, total=self.cfg.train.epochs, dynamic_ncols=True,
                       disable=None)
            for epoch in bar:
                loss_sum = train_epoch(self.model, self.opt, self.data.x_train, self.data.y_train,
                                       self.cfg.train.batch_size, self.generator, self.augment)
                run = RunState(epoch, run.step + self.steps_per_epoch, time.perf_counter() - start)
                if not math.isfinite(float(loss_sum)):
                    raise DivergedError(f"The training loss became {float(loss_sum)} during epoch {epoch} "
                                        f"(optim.lr={self.cfg.optim.lr}); the trace keeps every checkpoint "
                                        f"before it.")
                if epoch in self.schedule:
                    postfix = self.checkpoint(writer, run)
                    bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items() if k != "train_acc"}, refresh=False)
            status = "finished"
        except DivergedError as exc:
            status, error = "diverged", str(exc)
            raise
        except BaseException as exc:  # the trace says why it failed; the exception goes on to the caller
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            writer.close(status, error=error)
        return status
